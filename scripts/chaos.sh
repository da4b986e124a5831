#!/usr/bin/env bash
# The failure drill at the mission's scale (docs/DEPLOY.md, Failure drill): 200 closed-loop users of the stock
# gRPC client (tritonclient.grpc.aio, no retry settings) through the load balancer over TLS, 60 s per scenario,
# while one fault at a time strikes the deployed fleet: none, a server host killed, the Triton process killed,
# the Triton container stopped, a rolling deploy, a broken release (rolled back), the load balancer reloaded; in
# swarm mode a node killed and a rolling update. Writes build/chaos/chaos.json and chaos.png; exit 1 when a request
# failed.
#
#   scripts/chaos.sh                         every scenario (deploys the local fleet and the swarm fleet if needed)
#   scripts/chaos.sh --scenarios host-killed,lb-reload --users 200 --duration 60
#   scripts/chaos.sh --help                  the options (python -m tritonfleet.bench.chaos)
#
# About 35 minutes for every scenario on a 2-core machine, plus the swarm fleet's deploy when it is not running.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" no_proxy="*" NO_PROXY="*"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

log() { printf '[chaos.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

[ -x .venv/bin/python ] || scripts/setup.sh
for arg in "$@"; do case "$arg" in -h|--help) exec .venv/bin/python -m tritonfleet.bench.chaos --help ;; esac; done
if ! .venv/bin/python -c 'import matplotlib' 2>/dev/null; then
  log "installing matplotlib (the plot)"
  .venv/bin/pip install -q "matplotlib>=3.7"
fi

# Which fleets the scenarios need (the swarm scenarios' names start with swarm-).
scenarios=$(.venv/bin/python - "$@" <<'PY'
import sys
from tritonfleet.bench.chaos import SCENARIOS
args = sys.argv[1:]
names = args[args.index("--scenarios") + 1].split(",") if "--scenarios" in args else list(SCENARIOS)
print(" ".join(names))
PY
)
running() {  # INVENTORY: every host of it runs
  local host
  for host in $(TRITONFLEET_INVENTORY=$1 inventory_hosts all); do
    [ "$(docker inspect -f '{{.State.Running}}' "$host" 2>/dev/null)" = true ] || return 1
  done
}

if grep -qv '^swarm-' <<<"$(tr ' ' '\n' <<<"$scenarios")"; then
  if ! running inventories/local || [ ! -f build/deployed/local.json ]; then
    log "the local fleet is not deployed: scripts/deploy-local.sh"
    scripts/deploy-local.sh
  fi
fi
if grep -q '^swarm-' <<<"$(tr ' ' '\n' <<<"$scenarios")"; then
  if ! running inventories/swarm-local || [ ! -f build/deployed/swarm-local.json ]; then
    [ -f build/deployed/local.json ] || { log "the swarm fleet needs the local fleet's registry and release"; scripts/deploy-local.sh; }
    log "the swarm fleet is not deployed: scripts/fleet.sh create, site.yml (inventories/swarm-local)"
    TRITONFLEET_INVENTORY=inventories/swarm-local scripts/fleet.sh create
    ansible-playbook -i inventories/swarm-local playbooks/site.yml --skip-tags monitoring
  fi
fi
exec .venv/bin/python -m tritonfleet.bench.chaos "$@"
