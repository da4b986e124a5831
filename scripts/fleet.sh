#!/usr/bin/env bash
# The local fleet: Debian 12 containers with systemd as PID 1 that run their own Docker engine and sshd, standing in
# for GPU hosts (without the GPU). Ansible reaches them over SSH as the unprivileged user deploy with sudo, exactly
# as inventories/production reaches its hosts: only the addresses and the keys differ.
#
#   scripts/fleet.sh create     keys, network, hosts (+ the image registry, scripts/registry.sh); idempotent
#   scripts/fleet.sh destroy    hosts, their /var/lib/docker volumes, the network (unless others use it), the
#                               registry, the fleet's keys; idempotent
#   scripts/fleet.sh status     one line per host: state, IP on the fleet network, systemd state
#   scripts/fleet.sh ip HOST    the host's IP on the fleet network (what the controller connects to)
#
# What the fleet is comes from its inventory (TRITONFLEET_INVENTORY, default inventories/local), read once: its hosts
# and their addresses (ansible_host), the fleet's docker network and subnet (tritonfleet_fleet_network,
# tritonfleet_fleet_subnet; the gateway is the subnet's first address), whether the fleet runs the image registry
# (tritonfleet_fleet_registry), the login user (ansible_user), the controller's key (ansible_ssh_private_key_file) and
# the known_hosts file (UserKnownHostsFile in ansible_ssh_common_args). The keys are made here, once per fleet, in the
# folder of the controller's key: that key, and a host key per host (hosts/<host>/), which known_hosts pins; each host
# gets its host key, sshd's settings (keys only, no root login) and the controller's public key as the login user's
# authorized key before it first boots. See docs/FLEET.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# The fleet's settings, as shell assignments, from one `ansible-inventory --list` (the inventory writes them once).
fleet_settings() {
  .venv/bin/ansible-inventory -i "$TRITONFLEET_INVENTORY" --list 2>/dev/null | python3 -c '
import ipaddress, json, re, shlex, sys
data = json.load(sys.stdin)
hostvars = data["_meta"]["hostvars"]
def hosts(name):
    entry = data.get(name, {})
    return entry.get("hosts", []) + [h for child in entry.get("children", []) for h in hosts(child)]
names = list(dict.fromkeys(hosts("all")))
if not names:
    sys.exit("fleet: no hosts in the inventory")
first = hostvars[names[0]]
def need(name):
    if name not in first:
        sys.exit(f"fleet: the inventory sets no {name} (group_vars/all)")
    return str(first[name])
subnet = ipaddress.ip_network(need("tritonfleet_fleet_subnet"))
known = re.search(r"UserKnownHostsFile=(\S+)", str(first.get("ansible_ssh_common_args", "")))
if not known:
    sys.exit("fleet: ansible_ssh_common_args names no UserKnownHostsFile (the pinned host keys)")
out = {"FLEET": need("tritonfleet_fleet"), "NETWORK": need("tritonfleet_fleet_network"), "SUBNET": str(subnet),
       "GATEWAY": str(next(subnet.hosts())), "RUNS_REGISTRY": str(first.get("tritonfleet_fleet_registry", False)).lower(),
       "LOGIN_USER": need("ansible_user"), "CLIENT_KEY": need("ansible_ssh_private_key_file"),
       "KNOWN_HOSTS": known.group(1)}
for key, value in out.items():
    print(f"{key}={shlex.quote(value)}")
pairs = []
for name in names:
    address = str(hostvars[name].get("ansible_host", ""))
    if ipaddress.ip_address(address) not in subnet:
        sys.exit(f"fleet: {name}: ansible_host {address!r} is not an address of {subnet}")
    pairs.append(f"{name}={address}")
print("HOST_ADDRESSES=(" + " ".join(shlex.quote(p) for p in pairs) + ")")
'
}
settings=$(fleet_settings) || exit 1
eval "$settings"
read -r -a HOSTS <<<"${TRITONFLEET_HOSTS:-$(printf '%s\n' "${HOST_ADDRESSES[@]}" | cut -d= -f1 | tr '\n' ' ')}"
IMAGE=$(image debian12_systemd)
SSH_DIR=$(dirname "$CLIENT_KEY")
# The image's login user (scripts/build-images.sh makes it, with passwordless sudo).
IMAGE_LOGIN_USER=deploy
[ "$LOGIN_USER" = "$IMAGE_LOGIN_USER" ] || {
  echo "fleet: ansible_user is '$LOGIN_USER'; the fleet's hosts have the login user '$IMAGE_LOGIN_USER'" >&2; exit 1; }

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

host_state() {  # running, exited, created, ... or absent
  docker container inspect --format '{{.State.Status}}' "$1" 2>/dev/null || echo absent
}

host_address() {  # the address the inventory gives HOST
  local pair
  for pair in "${HOST_ADDRESSES[@]}"; do [ "${pair%%=*}" = "$1" ] && { echo "${pair#*=}"; return; }; done
  echo "fleet: $1 is not a host of $TRITONFLEET_INVENTORY" >&2; return 1
}

log() { printf '[fleet %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

host_ip() {
  docker inspect --format "{{ with index .NetworkSettings.Networks \"$NETWORK\" }}{{ .IPAddress }}{{ end }}" "$1" 2>/dev/null
}

ensure_network() {
  local subnet users
  if subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$NETWORK" 2>/dev/null); then
    [ "${subnet% }" = "$SUBNET" ] && return
    # A network of that name from elsewhere (an older fleet.sh, another checkout) with another subnet: the
    # inventory's addresses would not be on it.
    users=$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$NETWORK")
    if [ -n "$users" ]; then
      echo "fleet: the network $NETWORK exists with the subnet ${subnet% } (the inventory says $SUBNET) and" \
        "is used by: $users; remove them (or that fleet: scripts/fleet.sh destroy there), then run this again" >&2
      return 1
    fi
    log "replacing network $NETWORK (subnet ${subnet% }, the inventory says $SUBNET)"
    docker network rm "$NETWORK" >/dev/null
  fi
  log "creating network $NETWORK ($SUBNET, gateway $GATEWAY)"
  docker network create --driver bridge --subnet "$SUBNET" --gateway "$GATEWAY" \
    --label org.tritonfleet.fleet=1 "$NETWORK" >/dev/null
}

# The fleet's keys, made once: the controller's key and a host key per host; known_hosts pins the host keys at the
# hosts' addresses (written again each time, from the keys and the inventory).
ensure_keys() {
  local host key
  mkdir -p "$SSH_DIR"
  chmod 700 "$SSH_DIR"
  if [ ! -f "$CLIENT_KEY" ]; then
    log "making the controller's SSH key of the fleet $FLEET ($CLIENT_KEY)"
    ssh-keygen -q -t ed25519 -N '' -C "tritonfleet-$FLEET-controller" -f "$CLIENT_KEY"
  fi
  : >"$KNOWN_HOSTS.new"
  for host in "${HOSTS[@]}"; do
    key="$SSH_DIR/hosts/$host/ssh_host_ed25519_key"
    if [ ! -f "$key" ]; then
      mkdir -p "$(dirname "$key")"
      ssh-keygen -q -t ed25519 -N '' -C "root@$host" -f "$key"
    fi
    printf '%s %s\n' "$(host_address "$host")" "$(cut -d' ' -f1,2 "$key.pub")" >>"$KNOWN_HOSTS.new"
  done
  mv -f "$KNOWN_HOSTS.new" "$KNOWN_HOSTS"
}

host_key_fingerprint() {  # HOST: the SHA256 fingerprint of the host key the fleet made for it
  ssh-keygen -l -f "$SSH_DIR/hosts/$1/ssh_host_ed25519_key.pub" | cut -d' ' -f2
}

host_key_label() {  # HOST: the fingerprint its container was made with (empty: not made by this fleet.sh)
  docker container inspect --format '{{ index .Config.Labels "org.tritonfleet.host-key" }}' "$1" 2>/dev/null
}

# What a host gets before it first boots, as a tar stream for `docker cp`: its host key, sshd's settings, the
# controller's public key as the login user's authorized key, and sshd enabled at boot.
host_files() {  # HOST
  python3 - "$SSH_DIR/hosts/$1/ssh_host_ed25519_key" "$CLIENT_KEY.pub" "$LOGIN_USER" <<'PY'
import io, sys, tarfile, time
host_key, client_pub, user = sys.argv[1:]
uid = gid = 2000  # the login user of the image (scripts/build-images.sh)
sshd_config = b"""# tritonfleet: the local fleet's sshd (scripts/fleet.sh): this host key, keys only, no root login.
HostKey /etc/ssh/ssh_host_ed25519_key
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AuthenticationMethods publickey
"""
tar = tarfile.open(fileobj=sys.stdout.buffer, mode="w|")
def add(path, data=None, mode=0o644, owner=(0, 0), kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(path)
    info.mode, (info.uid, info.gid), info.type, info.mtime = mode, owner, kind, int(time.time())
    if kind == tarfile.SYMTYPE:
        info.linkname = link
        tar.addfile(info)
    elif kind == tarfile.DIRTYPE:
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
add("etc/ssh/ssh_host_ed25519_key", open(host_key, "rb").read(), 0o600)
add("etc/ssh/ssh_host_ed25519_key.pub", open(host_key + ".pub", "rb").read())
add("etc/ssh/sshd_config.d/tritonfleet.conf", sshd_config)
add(f"home/{user}/.ssh", mode=0o700, owner=(uid, gid), kind=tarfile.DIRTYPE)
add(f"home/{user}/.ssh/authorized_keys", open(client_pub, "rb").read(), 0o600, (uid, gid))
add("etc/systemd/system/multi-user.target.wants/ssh.service", kind=tarfile.SYMTYPE,
    link="/lib/systemd/system/ssh.service")
tar.close()
PY
}

wait_booted() {  # HOST: until systemd has finished booting (running or degraded) and sshd answers
  local state
  for _ in $(seq 1 60); do
    state=$(docker exec "$1" systemctl is-system-running 2>/dev/null || true)
    case "$state" in
      running|degraded) docker exec "$1" systemctl is-active --quiet ssh && return 0 ;;
    esac
    sleep 1
  done
  echo "fleet: $1 did not finish booting (systemd: ${state:-?}; sshd: $(docker exec "$1" systemctl is-active ssh 2>&1))" >&2
  return 1
}

create() {
  local start=$SECONDS host state fingerprint
  scripts/docker-up.sh >/dev/null
  docker image inspect "$IMAGE" >/dev/null 2>&1 || scripts/build-images.sh debian12-systemd
  ensure_network
  ensure_keys
  for host in "${HOSTS[@]}"; do
    state=$(host_state "$host" | tail -n1)
    fingerprint=$(host_key_fingerprint "$host")
    # A container of that name made with another host key (another checkout's fleet, a fleet whose keys were
    # removed, one from before the fleet had sshd) would fail the pinned host key: it is replaced, disk and all.
    if [ "$state" != absent ] && [ "$(host_key_label "$host")" != "$fingerprint" ]; then
      log "replacing $host: it was not made with this fleet's host key ($SSH_DIR/hosts/$host)"
      docker rm -f "$host" >/dev/null
      docker volume rm -f "$host-docker" >/dev/null
      state=absent
    fi
    case "$state" in
      running) log "$host is running" ;;
      absent)
        log "starting $host ($(host_address "$host"))"
        docker create --name "$host" --hostname "$host" --network "$NETWORK" --ip "$(host_address "$host")" \
          --label org.tritonfleet.fleet=1 --label "org.tritonfleet.fleet-name=$FLEET" \
          --label "org.tritonfleet.host-key=$fingerprint" "${RUN_FLAGS[@]}" \
          -v "$host-docker:/var/lib/docker" "$IMAGE" >/dev/null
        host_files "$host" | docker cp -a - "$host:/"
        docker start "$host" >/dev/null ;;
      created)  # made, never started (an interrupted create): its files again, then boot
        host_files "$host" | docker cp -a - "$host:/"
        docker start "$host" >/dev/null ;;
      *) log "restarting $host ($state)"; docker start "$host" >/dev/null ;;
    esac
  done
  for host in "${HOSTS[@]}"; do wait_booted "$host"; done
  if [ "$RUNS_REGISTRY" = true ]; then scripts/registry.sh start; fi
  log "fleet $FLEET ready in $((SECONDS - start)) s (SSH: $LOGIN_USER with $CLIENT_KEY, host keys pinned in $KNOWN_HOSTS)"
  status
}

destroy() {
  local host
  for host in "${HOSTS[@]}"; do
    if docker container inspect "$host" >/dev/null 2>&1; then log "removing $host"; docker rm -f "$host" >/dev/null; fi
    if docker volume inspect "$host-docker" >/dev/null 2>&1; then docker volume rm "$host-docker" >/dev/null; fi
  done
  if [ "$RUNS_REGISTRY" = true ]; then scripts/registry.sh stop; fi
  # Another fleet may share the network (TRITONFLEET_INVENTORY names a fleet, not the network): only an empty one goes.
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    if [ -n "$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$NETWORK")" ]; then
      log "keeping network $NETWORK: other containers use it"
    else
      log "removing network $NETWORK"
      docker network rm "$NETWORK" >/dev/null
    fi
  fi
  # A new fleet gets new keys (only when every host of the fleet went).
  if [ -z "${TRITONFLEET_HOSTS:-}" ] && [ -d "$SSH_DIR" ]; then log "removing the fleet's keys ($SSH_DIR)"; rm -rf "$SSH_DIR"; fi
}

status() {
  local host state
  printf '%-14s %-9s %-15s %s\n' HOST STATE IP SYSTEMD
  for host in "${HOSTS[@]}"; do
    state=$(host_state "$host" | tail -n1)
    printf '%-14s %-9s %-15s %s\n' "$host" "$state" "$(host_ip "$host" || true)" \
      "$( [ "$state" = running ] && docker exec "$host" systemctl is-system-running 2>/dev/null || echo -)"
  done
  if [ "$RUNS_REGISTRY" = true ]; then scripts/registry.sh status || true; fi
}

case "${1:-}" in
  create) create ;;
  destroy) destroy ;;
  status) status ;;
  network) ensure_network ;;
  ip) [ -n "${2:-}" ] || { echo "usage: $0 ip HOST" >&2; exit 2; }; host_ip "$2" ;;
  *) echo "usage: $0 create|destroy|status|ip HOST" >&2; exit 2 ;;
esac
