#!/usr/bin/env bash
# Lint and test the Ansible side: yamllint, ansible-lint (production profile), then `molecule test` for every
# role with a scenario (roles/*/molecule/default), one after the other. Stops at the first failure.
#
#   scripts/test-ansible.sh [ROLE...]     default: every role that has roles/ROLE/molecule/default
#
# Environment: SKIP_LINT=1, SKIP_MOLECULE=1. Prints a table of timings at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH="$ROOT/.venv/bin:$PATH"
# Plain logs in CI; molecule and ansible colour their output otherwise.
export NO_COLOR=1 PY_COLORS=0 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# The Molecule platform's image (.config/molecule/config.yml reads it from the environment).
DEBIAN12_SYSTEMD_IMAGE=$(image debian12_systemd)
export DEBIAN12_SYSTEMD_IMAGE

timings=()
step() {  # NAME COMMAND...: run, time, remember
  local name=$1 start=$SECONDS rc=0
  shift
  printf '\n===== %s =====\n' "$name"
  "$@" || rc=$?
  timings+=("$(printf '%-44s %5d s  %s' "$name" $((SECONDS - start)) "$([ $rc = 0 ] && echo ok || echo FAILED)")")
  if [ "$rc" != 0 ]; then
    report
    echo "test-ansible: '$name' failed (exit $rc)" >&2
    exit "$rc"
  fi
}
report() {
  printf '\n===== timings =====\n'
  printf '%s\n' "${timings[@]}"
}

roles=("$@")
if [ "${#roles[@]}" -eq 0 ]; then
  for scenario in roles/*/molecule/default; do
    [ -d "$scenario" ] && roles+=("$(basename "$(dirname "$(dirname "$scenario")")")")
  done
fi

if [ "${SKIP_LINT:-0}" != 1 ]; then
  step "yamllint" yamllint --strict .
  step "ansible-lint (production)" ansible-lint
fi

if [ "${SKIP_MOLECULE:-0}" != 1 ]; then
  step "docker engine" scripts/docker-up.sh
  step "images debian12-systemd, tritonserver-cpu" scripts/build-images.sh debian12-systemd tritonserver-cpu
  for role in "${roles[@]}"; do
    # A container name per role (.config/molecule/config.yml): scenarios never collide.
    # shellcheck disable=SC2016  # $1 is expanded by the inner bash
    step "molecule test: $role" env TF_MOLECULE_INSTANCE="tf-molecule-${role//_/-}" \
      bash -c 'cd "roles/$1" && molecule test' _ "$role"
  done
fi
report
