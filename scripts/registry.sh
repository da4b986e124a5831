#!/usr/bin/env bash
# The fleet's image registry: Debian's `docker-registry` (the CNCF distribution registry, v2 API) run as a plain
# process of this machine, listening on the fleet network's gateway (172.30.0.1:5000): the fleet hosts reach it,
# nothing else does. Plain HTTP, so the hosts list it in daemon.json "insecure-registries" (role docker).
# Images are copied into it with skopeo (docker-daemon: -> docker://), which needs no change to this machine's
# own Docker engine (`docker push` would need the address in *its* insecure-registries).
#
#   scripts/registry.sh start            idempotent; installs docker-registry and skopeo when missing
#   scripts/registry.sh stop
#   scripts/registry.sh status
#   scripts/registry.sh push [IMAGE...]  default: the tritonserver-cpu and convert images; skips unchanged ones;
#                                        records each image's digest in the registry in build/registry/digests.json
#                                        (the local inventory names the Triton image by it)
#   scripts/registry.sh address          prints HOST:PORT
#
# Storage and log: build/registry/. See docs/FLEET.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$(pwd)/build/registry
PIDFILE=$DIR/registry.pid
# What each image pushed here is, by digest: the local inventory names the Triton image by it (no tag that drifts).
DIGESTS=$DIR/digests.json
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# Where the registry listens: the local fleet's tritonfleet_registry (inventories/local, the one place that says it).
ADDRESS=${TRITONFLEET_REGISTRY_ADDRESS:-$(TRITONFLEET_INVENTORY=inventories/local \
  inventory_var "$(TRITONFLEET_INVENTORY=inventories/local inventory_hosts all | head -n 1)" tritonfleet_registry)}
[ -n "$ADDRESS" ] || { echo "registry: inventories/local sets no tritonfleet_registry" >&2; exit 1; }
DEFAULT_IMAGES=("$(image tritonserver_cpu)" "$(image convert)")

log() { printf '[registry %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

answers() { curl -fsS -m 2 -o /dev/null "http://$ADDRESS/v2/" 2>/dev/null; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install_tools() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start() {
  if running && answers; then log "running on $ADDRESS (pid $(cat "$PIDFILE"))"; return; fi
  install_tools
  # The address must exist on this machine: it is the fleet network's bridge.
  scripts/fleet.sh network
  mkdir -p "$DIR/data"
  cat >"$DIR/config.yml" <<CONFIG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: $ADDRESS
CONFIG
  nohup docker-registry serve "$DIR/config.yml" >>"$DIR/registry.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 30); do
    if answers; then log "started on $ADDRESS (pid $(cat "$PIDFILE"), storage $DIR/data)"; return; fi
    sleep 0.5
  done
  echo "registry: no answer on $ADDRESS; see $DIR/registry.log" >&2
  tail -n 20 "$DIR/registry.log" >&2 || true
  exit 1
}

stop() {
  if running; then
    log "stopping pid $(cat "$PIDFILE")"
    kill "$(cat "$PIDFILE")"
  fi
  rm -f "$PIDFILE"
}

status() {
  if running && answers; then
    echo "registry: $ADDRESS (pid $(cat "$PIDFILE")): $(curl -fsS -m 5 "http://$ADDRESS/v2/_catalog")"
  else
    echo "registry: not running"
    return 1
  fi
}

# IMAGE's manifest digest in the registry (sha256:...), recorded in $DIGESTS: {"IMAGE": "sha256:..."}.
record_digest() {  # IMAGE
  local digest
  digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$ADDRESS/$1")
  python3 - "$DIGESTS" "$1" "$digest" <<'PY'
import json, pathlib, sys
path, image, digest = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
digests = json.loads(path.read_text()) if path.exists() else {}
digests[image] = digest
path.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
PY
}

push() {
  local images=("$@") image id stamp start
  [ "${#images[@]}" -gt 0 ] || images=("${DEFAULT_IMAGES[@]}")
  if ! { running && answers; }; then start; fi
  mkdir -p "$DIR/pushed"
  for image in "${images[@]}"; do
    id=$(docker image inspect --format '{{.Id}}' "$image")
    stamp="$DIR/pushed/$(echo "$image" | tr '/:' '__')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$id" ] && \
       skopeo inspect --tls-verify=false --raw "docker://$ADDRESS/$image" >/dev/null 2>&1; then
      log "$ADDRESS/$image is up to date"
      record_digest "$image"
      continue
    fi
    start=$SECONDS
    log "copying $image to $ADDRESS/$image"
    skopeo copy --quiet --dest-tls-verify=false "docker-daemon:$image" "docker://$ADDRESS/$image"
    echo "$id" >"$stamp"
    record_digest "$image"
    log "$ADDRESS/$image pushed in $((SECONDS - start)) s"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  push) shift; push "$@" ;;
  address) echo "$ADDRESS" ;;
  *) echo "usage: $0 start|stop|status|push [IMAGE...]|address" >&2; exit 2 ;;
esac
