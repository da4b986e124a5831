#!/usr/bin/env bash
# The smoke test of the local fleet, printed: every server (swarm mode: every node that runs a task of the Triton
# service) and every load balancer of inventories/local (TRITONFLEET_INVENTORY), over gRPC, against the release the
# fleet's deploy record (build/deployed/local.json) says it serves. Exit 1 when a check
# fails. scripts/deploy-local.sh ends with it; the deploy tests run it after a rollback to an earlier release.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export no_proxy="*" NO_PROXY="*"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# The fleet's deploy record: build/deployed/<tritonfleet_fleet>.json.
RECORD=${TRITONFLEET_DEPLOY_RECORD:-build/deployed/$(inventory_var "$(inventory_hosts all | head -n 1)" tritonfleet_fleet).json}

status=0
smoke() {  # NAME ADDRESS RECORD-ARGS [SMOKE-TEST-ARGS...]: the release the record names (--host HOST, or "")
  local name=$1 address=$2 who=$3 release id
  shift 3
  read -r -a who <<<"$who"
  release=$(tritonfleet release deployed "$RECORD" "${who[@]}" --field path)
  id=$(tritonfleet release deployed "$RECORD" "${who[@]}" --field id)
  echo
  echo "=== smoke test: $name ($address:8001, gRPC$([ $# -gt 0 ] && echo ", TLS, public")), release ${id:0:12} ==="
  tritonfleet smoke-test --url "$address:8001" --protocol grpc --release "$release" "$@" || status=1
}
for host in $(triton_hosts); do smoke "$host" "$(fleet_address "$host")" "--host $host"; done
for host in $(inventory_hosts load_balancers); do
  smoke "load balancer on $host" "$(fleet_address "$host")" "" --public --ca-file "$TRITONFLEET_CA"
done
exit $status
