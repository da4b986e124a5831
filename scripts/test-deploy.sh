#!/usr/bin/env bash
# The deployment tests (called by scripts/test.sh):
#   1. scripts/deploy-local.sh: images, fleet, site.yml (first run);
#   2. testinfra on the deployed fleet (tests/infra, --hosts=ansible://triton_servers, inventories/local);
#   3. tests/deploy: a second site.yml run changes nothing, --check --diff reports nothing, an earlier release
#      deployed again is what the record, testinfra and the smoke tests check, bad input (missing variable, bad port,
#      unreachable host), a smoke-test mismatch stops the rollout, a host that dies mid-deploy;
#   4. swarm mode (tests/deploy/test_swarm.py) on a fleet of its own (inventories/swarm-local), which it creates and
#      removes: deploy, idempotence, scaling, a killed worker, a rolling update, a rollback (docs/SWARM.md).
# Logs: build/test-deploy/. SKIP_DEPLOY=1 skips step 1 (the fleet is already deployed), SKIP_SWARM=1 step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export no_proxy="*" NO_PROXY="*"
mkdir -p build/test-deploy
log() { printf '[test-deploy %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
total=$SECONDS
timings=()

if [ "${SKIP_DEPLOY:-0}" != 1 ]; then
  start=$SECONDS
  log "scripts/deploy-local.sh (log: build/test-deploy/deploy-local.log)"
  # pipefail: the pipeline fails when deploy-local.sh does (the filter's own status is ignored).
  if ! scripts/deploy-local.sh 2>&1 | tee build/test-deploy/deploy-local.log \
      | { grep -E '^\[deploy-local|PLAY RECAP|: ok=|^===|PASS|FAIL' || true; }; then
    log "deploy-local.sh failed"; tail -n 60 build/test-deploy/deploy-local.log; exit 1
  fi
  timings+=("deploy-local.sh: $((SECONDS - start)) s")
fi

start=$SECONDS
log "testinfra on the deployed fleet, over SSH: the servers, then the login user on every host"
pytest -p no:cacheprovider -m deploy tests/infra/test_fleet.py -v --hosts='ansible://triton_servers' \
  --ansible-inventory=inventories/local --junitxml=build/test-deploy/infra.xml
pytest -p no:cacheprovider -m deploy tests/infra/test_login_user.py -v --hosts='ansible://all' \
  --ansible-inventory=inventories/local --junitxml=build/test-deploy/infra-login.xml
timings+=("tests/infra: $((SECONDS - start)) s")

start=$SECONDS
log "playbook tests (idempotence, check mode, bad input, failed rollout)"
pytest -p no:cacheprovider -m deploy tests/deploy --ignore=tests/deploy/test_swarm.py -v -s --durations=12 \
  --junitxml=build/test-deploy/deploy.xml
timings+=("tests/deploy: $((SECONDS - start)) s")

if [ "${SKIP_SWARM:-0}" != 1 ]; then
  start=$SECONDS
  log "swarm mode on a fleet of its own (deploy, scale, a killed worker, rolling update, rollback)"
  pytest -p no:cacheprovider -m deploy tests/deploy/test_swarm.py -v -s --durations=8 --junitxml=build/test-deploy/swarm.xml
  timings+=("tests/deploy/test_swarm.py: $((SECONDS - start)) s")
fi

log "all deployment tests passed in $((SECONDS - total)) s"
printf '  %s\n' "${timings[@]}"
