#!/usr/bin/env bash
# The local fleet: Debian 12 containers with systemd as PID 1 that run their own Docker engine, standing in for
# GPU hosts (without the GPU). Ansible reaches them with the community.docker.docker connection plugin.
#
#   scripts/fleet.sh create     network + hosts (+ the image registry, scripts/registry.sh); idempotent
#   scripts/fleet.sh destroy    hosts, their /var/lib/docker volumes, the network (unless others use it), the
#                               registry; idempotent
#   scripts/fleet.sh status     one line per host: state, IP on the fleet network, systemd state
#   scripts/fleet.sh ip HOST    the host's IP on the fleet network (what the smoke test connects to)
#
# Environment: TRITONFLEET_HOSTS (default: every host of inventories/local), TRITONFLEET_NETWORK
# (tritonfleet), TRITONFLEET_SUBNET (172.30.0.0/24), TRITONFLEET_GATEWAY (172.30.0.1), TRITONFLEET_REGISTRY=0 to
# leave the registry alone. See docs/FLEET.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# The hosts are the local inventory's (TRITONFLEET_INVENTORY, default inventories/local).
read -r -a HOSTS <<<"${TRITONFLEET_HOSTS:-$(inventory_hosts all | tr '\n' ' ')}"
[ "${#HOSTS[@]}" -gt 0 ] || { echo "fleet: no hosts in $TRITONFLEET_INVENTORY (is .venv set up?)" >&2; exit 1; }
NETWORK=${TRITONFLEET_NETWORK:-tritonfleet}
SUBNET=${TRITONFLEET_SUBNET:-172.30.0.0/24}
GATEWAY=${TRITONFLEET_GATEWAY:-172.30.0.1}
IMAGE=$(image debian12_systemd)
REGISTRY=${TRITONFLEET_REGISTRY:-1}

# What systemd as PID 1 and Docker-in-Docker need here. Not --privileged and not --cap-add ALL: both fail on the
# build machines (SYS_RESOURCE is outside their bounding set). docs/FLEET.md explains each flag.
RUN_FLAGS=(
  --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE --cap-add MKNOD --cap-add NET_RAW --cap-add SYS_CHROOT
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --device-cgroup-rule 'a *:* rwm'
  --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw
  --tmpfs /run --tmpfs /run/lock --tmpfs /tmp
  --stop-signal SIGRTMIN+3
)

host_state() {  # running, exited, ... or absent
  docker container inspect --format '{{.State.Status}}' "$1" 2>/dev/null || echo absent
}

log() { printf '[fleet %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

host_ip() {
  docker inspect --format "{{ with index .NetworkSettings.Networks \"$NETWORK\" }}{{ .IPAddress }}{{ end }}" "$1" 2>/dev/null
}

ensure_network() {
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then return; fi
  log "creating network $NETWORK ($SUBNET, gateway $GATEWAY)"
  docker network create --driver bridge --subnet "$SUBNET" --gateway "$GATEWAY" \
    --label org.tritonfleet.fleet=1 "$NETWORK" >/dev/null
}

wait_booted() {  # HOST: until systemd has finished booting (running or degraded)
  local state
  for _ in $(seq 1 60); do
    state=$(docker exec "$1" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) return 0 ;; esac
    sleep 1
  done
  echo "fleet: $1 did not finish booting (systemd: ${state:-?})" >&2
  return 1
}

create() {
  local start=$SECONDS host state
  scripts/docker-up.sh >/dev/null
  docker image inspect "$IMAGE" >/dev/null 2>&1 || scripts/build-images.sh debian12-systemd
  ensure_network
  for host in "${HOSTS[@]}"; do
    state=$(host_state "$host" | tail -n1)
    case "$state" in
      running) log "$host is running" ;;
      absent)
        log "starting $host"
        docker run -d --name "$host" --hostname "$host" --network "$NETWORK" \
          --label org.tritonfleet.fleet=1 "${RUN_FLAGS[@]}" \
          -v "$host-docker:/var/lib/docker" "$IMAGE" >/dev/null ;;
      *) log "restarting $host ($state)"; docker start "$host" >/dev/null ;;
    esac
  done
  for host in "${HOSTS[@]}"; do wait_booted "$host"; done
  if [ "$REGISTRY" = 1 ]; then scripts/registry.sh start; fi
  log "fleet ready in $((SECONDS - start)) s"
  status
}

destroy() {
  local host
  for host in "${HOSTS[@]}"; do
    if docker container inspect "$host" >/dev/null 2>&1; then log "removing $host"; docker rm -f "$host" >/dev/null; fi
    if docker volume inspect "$host-docker" >/dev/null 2>&1; then docker volume rm "$host-docker" >/dev/null; fi
  done
  if [ "$REGISTRY" = 1 ]; then scripts/registry.sh stop; fi
  # Another fleet may share the network (TRITONFLEET_INVENTORY names a fleet, not the network): only an empty one goes.
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    if [ -n "$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$NETWORK")" ]; then
      log "keeping network $NETWORK: other containers use it"
    else
      log "removing network $NETWORK"
      docker network rm "$NETWORK" >/dev/null
    fi
  fi
}

status() {
  local host state
  printf '%-14s %-9s %-15s %s\n' HOST STATE IP SYSTEMD
  for host in "${HOSTS[@]}"; do
    state=$(host_state "$host" | tail -n1)
    printf '%-14s %-9s %-15s %s\n' "$host" "$state" "$(host_ip "$host" || true)" \
      "$( [ "$state" = running ] && docker exec "$host" systemctl is-system-running 2>/dev/null || echo -)"
  done
  if [ "$REGISTRY" = 1 ]; then scripts/registry.sh status || true; fi
}

case "${1:-}" in
  create) create ;;
  destroy) destroy ;;
  status) status ;;
  network) ensure_network ;;
  ip) [ -n "${2:-}" ] || { echo "usage: $0 ip HOST" >&2; exit 2; }; host_ip "$2" ;;
  *) echo "usage: $0 create|destroy|status|ip HOST" >&2; exit 2 ;;
esac
