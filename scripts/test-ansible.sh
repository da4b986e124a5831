#!/usr/bin/env bash
# Lint and test the Ansible side: yamllint, ansible-lint (production profile), then `molecule test` for every
# scenario of every role (roles/ROLE/molecule/SCENARIO), TF_MOLECULE_JOBS at a time (default 2: a scenario waits on
# systemd, Docker and Triton as much as it computes). Each scenario's output goes to
# build/test-ansible/ROLE-SCENARIO.log and is printed whole when it ends; no scenario starts after one failed.
#
#   scripts/test-ansible.sh [ROLE...]     every scenario of these roles (default: of every role)
#
# Environment: SKIP_LINT=1, SKIP_MOLECULE=1, TF_MOLECULE_JOBS=N (1: one after the other). Prints a table of timings
# at the end.
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

molecule_one() {  # ROLE/SCENARIO: `molecule test -s SCENARIO` in its role, output to its log, "SECONDS RC" to its
  local job=$1 start=$SECONDS rc=0  # result file
  # A container name per scenario (.config/molecule/config.yml): scenarios never collide.
  # shellcheck disable=SC2016  # $1 and $2 are expanded by the inner bash
  env TF_MOLECULE_INSTANCE="tf-molecule-$(echo "$job" | tr '_/' '--')" \
    bash -c 'cd "roles/$1" && molecule test -s "$2"' _ "${job%/*}" "${job#*/}" >"$logs/${job/\//-}.log" 2>&1 || rc=$?
  echo "$((SECONDS - start)) $rc" >"$logs/${job/\//-}.result"
}
molecule_report() {  # ROLE/SCENARIO: print its log and record its timing; false when it failed
  local role=$1 took rc
  read -r took rc <"$logs/${role/\//-}.result"
  printf '\n===== molecule test: %s (%d s, log: %s) =====\n' "$role" "$took" "$logs/${role/\//-}.log"
  cat "$logs/${role/\//-}.log"
  timings+=("$(printf '%-44s %5d s  %s' "molecule test: $role" "$took" "$([ "$rc" = 0 ] && echo ok || echo FAILED)")")
  [ "$rc" = 0 ]
}
molecule_all() {  # JOBS ROLE...: the scenarios, JOBS at a time, reported in the order they end
  local jobs=$1 role failed=
  shift
  local pending=("$@")
  declare -A pid_role=()
  while [ "${#pending[@]}" -gt 0 ] || [ "${#pid_role[@]}" -gt 0 ]; do
    while [ -z "$failed" ] && [ "${#pending[@]}" -gt 0 ] && [ "${#pid_role[@]}" -lt "$jobs" ]; do
      role=${pending[0]}; pending=("${pending[@]:1}")
      rm -f "$logs/${role/\//-}.result"
      echo "[test-ansible $(date +%H:%M:%S)] molecule test: $role (started)"
      molecule_one "$role" &
      pid_role[$!]=$role
    done
    [ -n "$failed" ] && pending=()
    [ "${#pid_role[@]}" -gt 0 ] || break
    wait -n || true
    for pid in "${!pid_role[@]}"; do
      role=${pid_role[$pid]}
      [ -f "$logs/${role/\//-}.result" ] || continue  # its last act: the scenario is over
      wait "$pid" || true
      unset "pid_role[$pid]"
      molecule_report "$role" || failed=$role
    done
  done
  if [ -n "$failed" ]; then
    report
    echo "test-ansible: 'molecule test: $failed' failed (log: $logs/${failed/\//-}.log)" >&2
    exit 1
  fi
}

logs=$ROOT/build/test-ansible
mkdir -p "$logs"
# ROLE/SCENARIO jobs: every scenario of the roles asked for (default: every role), the slowest first: the build
# scenario of model_conversion builds the whole conversion image.
roles=("$@")
[ "${#roles[@]}" -gt 0 ] || mapfile -t roles < <(ls roles)
jobs=()
for role in "${roles[@]}"; do
  for scenario in roles/"$role"/molecule/*/molecule.yml; do
    [ -f "$scenario" ] || continue
    scenario=$(basename "$(dirname "$scenario")")
    if [ "$scenario" = build ]; then jobs=("$role/$scenario" "${jobs[@]}"); else jobs+=("$role/$scenario"); fi
  done
done

if [ "${SKIP_LINT:-0}" != 1 ]; then
  step "yamllint" yamllint --strict .
  step "ansible-lint (production)" ansible-lint
fi

if [ "${SKIP_MOLECULE:-0}" != 1 ]; then
  step "docker engine" scripts/docker-up.sh
  step "images debian12-systemd, tritonserver-cpu" scripts/build-images.sh debian12-systemd tritonserver-cpu
  molecule_all "${TF_MOLECULE_JOBS:-2}" "${jobs[@]}"
fi
report
