#!/usr/bin/env bash
# The README's second command: set everything up, then run every test stage.
#   scripts/test.sh                 all stages
#   scripts/test.sh unit integration  only those stages
# Stages: lint unit integration ansible deploy bench (all by default).
set -euo pipefail
cd "$(dirname "$0")/.."
ALL_STAGES=(lint unit integration ansible deploy bench)
DEFAULT_STAGES=("${ALL_STAGES[@]}")
stages=("$@")
[ "${#stages[@]}" -gt 0 ] || stages=("${DEFAULT_STAGES[@]}")

setup_t0=$SECONDS
scripts/setup.sh
setup_s=$((SECONDS - setup_t0))
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p build/test-results
summary=("$(printf '%-12s ok      %4ds' setup "$setup_s")")
print_summary() {  # every stage's time, then the whole run's (setup included)
  printf '%s\n' "" "=== test summary ===" "${summary[@]}" "$(printf '%-12s         %4ds' total "$SECONDS")"
}
run_stage() {
  local name=$1; shift
  local t0=$SECONDS
  echo; echo "=== stage: $name ==="
  if "$@"; then
    summary+=("$(printf '%-12s ok      %4ds' "$name" $((SECONDS - t0)))")
  else
    summary+=("$(printf '%-12s FAILED  %4ds' "$name" $((SECONDS - t0)))")
    print_summary
    exit 1
  fi
}

for stage in "${stages[@]}"; do
  case "$stage" in
    lint) run_stage lint ruff check . ;;
    unit) run_stage unit python -m pytest -m unit tests/unit -q -p no:cacheprovider \
            --junitxml=build/test-results/unit.xml ;;
    integration) run_stage integration python -m pytest -m integration tests/integration -q -p no:cacheprovider \
                   --junitxml=build/test-results/integration.xml ;;
    ansible) run_stage ansible scripts/test-ansible.sh ;;
    deploy) run_stage deploy scripts/test-deploy.sh ;;
    bench) run_stage bench python -m pytest -m bench tests/bench -q -p no:cacheprovider \
             --junitxml=build/test-results/bench.xml ;;
    *) echo "test.sh: unknown stage '$stage' (stages: ${ALL_STAGES[*]})" >&2; exit 2 ;;
  esac
done
print_summary
