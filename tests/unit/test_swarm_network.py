"""The swarm's overlay network (role triton_server, entry point `service`): encrypted by default, plain only where
the inventory says so. Rendered by Ansible itself from the role's defaults and vars, as the stack file gets it.

Not verified here: an encrypted network carrying traffic between nodes. This machine's kernel has no
rfc4106(gcm(aes)), so the local swarm turns the option off (inventories/swarm-local, docs/SWARM.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "triton_server"


def network_spec(tmp_path: Path, *extra_vars: str) -> dict:
    """triton_server_swarm_network_spec as Ansible renders it from the role's defaults and vars."""
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_vars": str(ROLE / "defaults" / "main.yml")},
                  {"ansible.builtin.include_vars": str(ROLE / "vars" / "main.yml")},
                  {"ansible.builtin.debug": {"var": "triton_server_swarm_network_spec"}}]}]))
    args = [arg for value in extra_vars for arg in ("-e", value)]
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")  # none of the project's (its callbacks, its inventory)
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(playbook), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    tasks = json.loads(done.stdout)["plays"][0]["tasks"]
    return tasks[-1]["hosts"]["localhost"]["triton_server_swarm_network_spec"]


def test_the_overlay_network_is_encrypted_by_default(tmp_path):
    assert network_spec(tmp_path) == {"driver": "overlay", "attachable": False, "name": "tritonfleet_triton",
                                      "driver_opts": {"encrypted": "true"}}


def test_the_inventory_can_turn_the_encryption_off(tmp_path):
    assert network_spec(tmp_path, "triton_server_swarm_network_encrypted=false") == {
        "driver": "overlay", "attachable": False, "name": "tritonfleet_triton"}


def test_only_the_local_swarm_turns_it_off():
    """The production inventory keeps the role's default; the local swarm's says why it differs."""
    settings = {path.relative_to(ROOT / "inventories").parts[0]: yaml.safe_load(path.read_text())
                for path in (ROOT / "inventories").rglob("*.yml")
                if "triton_server_swarm_network_encrypted" in path.read_text()}
    assert {inventory: data["triton_server_swarm_network_encrypted"] for inventory, data in settings.items()} == {
        "swarm-local": False}
