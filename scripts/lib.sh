# shellcheck shell=bash
# Sourced by the scripts: what they share, read from the one place that defines it.
#   image NAME           an image of docker/images.yml (debian12_systemd, debian12_base, tritonserver_cpu, convert)
#   inventory_hosts PAT  the hosts of the local inventory that match PAT (a group, "all", ...), one per line
#   fleet_address HOST   a fleet host's address on the fleet network (what the controller connects to)
#   inventory_var HOST VAR  a variable of a host as the inventory writes it (not templated; empty when unset)
#   triton_hosts         the hosts that serve Triton: the triton_servers; in swarm mode those that run a task of the
#                        Triton service now (asked from the first swarm manager)
# Run from the project root.

TRITONFLEET_INVENTORY=${TRITONFLEET_INVENTORY:-inventories/local}
# The CA the load balancer's TLS certificate chains to: the fleet's own (playbooks/group_vars/all.yml,
# tritonfleet_pki_dir), made by the load_balancer role on the controller.
TRITONFLEET_CA=${TRITONFLEET_CA:-build/pki/ca.crt}

image() {
  local value
  value=$(sed -n "s/^$1: *//p" docker/images.yml)
  [ -n "$value" ] || { echo "docker/images.yml names no image '$1'" >&2; return 1; }
  printf '%s\n' "$value"
}

inventory_hosts() {
  .venv/bin/ansible -i "$TRITONFLEET_INVENTORY" "$1" --list-hosts 2>/dev/null | tail -n +2 | awk '{print $1}'
}

fleet_address() {
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" | awk '{print $1}'
}

inventory_var() {
  .venv/bin/ansible-inventory -i "$TRITONFLEET_INVENTORY" --host "$1" 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2"
}

triton_hosts() {
  local first manager service
  first=$(inventory_hosts triton_servers | head -n 1)
  if [ "$(inventory_var "$first" tritonfleet_orchestrator)" != swarm ]; then
    inventory_hosts triton_servers
    return
  fi
  manager=$(inventory_hosts swarm_managers | head -n 1)
  service=$(docker exec "$manager" docker service ls --filter label=org.tritonfleet.role=triton_server --format '{{.Name}}')
  # The node names are the host names (the fleet's containers are named after their hosts).
  docker exec "$manager" docker service ps --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' \
    "$service" | awk '$2 == "Running" {print $1}' | sort
}
