"""The deploy tests need the deployed local fleet (scripts/deploy-local.sh; scripts/test-deploy.sh runs both); the
swarm tests (test_swarm.py) make a fleet of their own and need only the local fleet's registry and releases."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from fleetlib import CONVERSION_HOST, SERVERS


@pytest.fixture(scope="module", autouse=True)
def fleet_is_up(request: pytest.FixtureRequest):
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    if not getattr(request.module, "USES_LOCAL_FLEET", True):  # test_swarm.py makes a fleet of its own
        return
    for host in SERVERS + [CONVERSION_HOST]:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", host], capture_output=True, text=True)
        if state.stdout.strip() != "true":
            pytest.fail(f"fleet host {host} is not running: run scripts/deploy-local.sh first")
