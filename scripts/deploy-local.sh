#!/usr/bin/env bash
# Deploy the pipeline to the local fleet, end to end:
#   1. a Docker engine on this machine, the images (scripts/build-images.sh: only what is out of date),
#   2. the fleet (scripts/fleet.sh create: tf-server-1, tf-server-2, tf-convert-1), when it is not running,
#   3. the embedded demo model (tritonfleet demo-model), the images pushed to the fleet's registry,
#   4. ansible-playbook playbooks/site.yml -i inventories/local (extra arguments are passed on),
#   5. the smoke-test predictions of every server and of the load balancer.
# Idempotent: a second run changes nothing on the fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export no_proxy="*" NO_PROXY="*"

log() { printf '[deploy-local %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
SERVERS=(tf-server-1 tf-server-2)
CONVERSION_HOST=tf-convert-1
TRITON_IMAGE=tritonfleet/tritonserver-cpu:2.51.0
CONVERT_IMAGE=tritonfleet/convert:$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
total=$SECONDS

[ -x .venv/bin/ansible-playbook ] || { echo "deploy-local: .venv is missing; run scripts/setup.sh" >&2; exit 1; }
scripts/docker-up.sh >/dev/null

start=$SECONDS
log "images (scripts/build-images.sh)"
scripts/build-images.sh debian12-systemd tritonserver-cpu convert
log "images ready in $((SECONDS - start)) s"

running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
fleet_up=1
for host in "${SERVERS[@]}" "$CONVERSION_HOST"; do running "$host" || fleet_up=0; done
if [ "$fleet_up" = 0 ]; then
  start=$SECONDS
  log "creating the fleet (scripts/fleet.sh create)"
  scripts/fleet.sh create
  log "fleet created in $((SECONDS - start)) s"
fi

start=$SECONDS
log "demo model (tritonfleet demo-model --output build/demo-model)"
tritonfleet demo-model --output build/demo-model
log "demo model ready in $((SECONDS - start)) s"

# The fleet hosts pull the images from the fleet's registry (scripts/registry.sh; unchanged images are skipped).
start=$SECONDS
extra=()
push_log=$(scripts/registry.sh push "$TRITON_IMAGE" "$CONVERT_IMAGE" | tee /dev/stderr)
# A tag pushed again: the hosts must pull it although they have an image of that name.
if grep -q "$TRITON_IMAGE pushed in" <<<"$push_log"; then extra+=(-e triton_server_image_force_pull=true); fi
log "images in the fleet's registry in $((SECONDS - start)) s"

start=$SECONDS
log "ansible-playbook playbooks/site.yml ${extra[*]} $*"
ansible-playbook -i inventories/local playbooks/site.yml "${extra[@]}" "$@"
log "site.yml done in $((SECONDS - start)) s"

golden=$(ls -t build/fleet/*/golden.json | head -n1)
address() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" | awk '{print $1}'; }
status=0
for host in "${SERVERS[@]}" "$CONVERSION_HOST"; do
  name=$host; [ "$host" = "$CONVERSION_HOST" ] && name="load balancer on $host"
  echo
  echo "=== smoke test: $name ($(address "$host"):8001, gRPC) ==="
  tritonfleet smoke-test --url "$(address "$host"):8001" --protocol grpc --golden "$golden" || status=1
done
log "done in $((SECONDS - total)) s"
exit $status
