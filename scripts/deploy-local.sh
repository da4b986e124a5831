#!/usr/bin/env bash
# Deploy the pipeline to the local fleet, end to end:
#   1. a Docker engine on this machine, the images (scripts/build-images.sh: only what is out of date),
#   2. the fleet (scripts/fleet.sh create: the hosts of inventories/local; idempotent),
#   3. the embedded demo models (tritonfleet demo-model), the images pushed to the fleet's registry,
#   4. ansible-playbook playbooks/site.yml -i inventories/local (extra arguments are passed on),
#   5. the smoke-test predictions of every server and of the load balancer, for the release the deploy record
#      says each of them serves (scripts/smoke-fleet.sh).
# Idempotent: a second run changes nothing on the fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export no_proxy="*" NO_PROXY="*"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

log() { printf '[deploy-local %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
total=$SECONDS

[ -x .venv/bin/ansible-playbook ] || { echo "deploy-local: .venv is missing; run scripts/setup.sh" >&2; exit 1; }
scripts/docker-up.sh >/dev/null

start=$SECONDS
log "images (scripts/build-images.sh)"
scripts/build-images.sh debian12-systemd tritonserver-cpu convert
log "images ready in $((SECONDS - start)) s"

# Always: fleet.sh create is idempotent (a few seconds when the fleet runs) and is what checks that the running
# hosts are this fleet's (its keys: a host made elsewhere, by another checkout, is replaced).
start=$SECONDS
log "the fleet (scripts/fleet.sh create)"
scripts/fleet.sh create
log "fleet ready in $((SECONDS - start)) s"

start=$SECONDS
log "demo models (tritonfleet demo-model)"
tritonfleet demo-model
log "demo models ready in $((SECONDS - start)) s"

# The fleet hosts pull the images from the fleet's registry (scripts/registry.sh; unchanged images are skipped).
start=$SECONDS
extra=()
# tee to a file, not to /dev/stderr: reopening stderr truncates it when it is a file (`demo.sh > demo.log 2>&1` lost
# everything before the push).
push_log=build/registry-push.log
scripts/registry.sh push "$(image tritonserver_cpu)" "$(image convert)" | tee "$push_log"
# A tag pushed again: the conversion host must pull it although it has an image of that name. (The Triton image is
# named by its digest, build/registry/digests.json: a new image is a new name, which the servers pull.)
if grep -q "$(image convert) pushed in" "$push_log"; then extra+=(-e model_conversion_image_force_pull=true); fi
log "images in the fleet's registry in $((SECONDS - start)) s"

start=$SECONDS
log "ansible-playbook playbooks/site.yml ${extra[*]} $*"
ansible-playbook -i "$TRITONFLEET_INVENTORY" playbooks/site.yml "${extra[@]}" "$@"
log "site.yml done in $((SECONDS - start)) s"

status=0
scripts/smoke-fleet.sh || status=1
log "done in $((SECONDS - total)) s"
exit $status
