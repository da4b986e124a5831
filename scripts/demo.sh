#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job on the embedded default:
# build the demo model, create the local fleet (3 container hosts on this machine), deploy it with the real
# playbooks (playbooks/site.yml, inventories/local), and print the smoke-test predictions of every host.
# Extra arguments go to ansible-playbook. `.venv/bin/tritonfleet demo` is the single-machine variant.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec scripts/deploy-local.sh "$@"
