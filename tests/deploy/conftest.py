"""The deploy tests need the deployed local fleet (scripts/deploy-local.sh; scripts/test-deploy.sh runs both)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from fleetlib import CONVERSION_HOST, SERVERS


@pytest.fixture(scope="session", autouse=True)
def fleet_is_up():
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    for host in SERVERS + [CONVERSION_HOST]:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", host], capture_output=True, text=True)
        if state.stdout.strip() != "true":
            pytest.fail(f"fleet host {host} is not running: run scripts/deploy-local.sh first")
