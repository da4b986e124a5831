"""testinfra for the deployed local fleet.

Run (scripts/test-deploy.sh does) from the repository root against the server group of the local inventory:

    .venv/bin/pytest tests/infra --hosts='ansible://triton_servers' --ansible-inventory=inventories/local

What each host should serve comes from the fleet's deploy record (build/deployed/local.json), written by the deploy
when it activated the release on that host: never guessed from the controller's files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tritonfleet.release import Release, deployed

ROOT = Path(__file__).resolve().parents[2]
RECORD = Path(os.environ.get("TRITONFLEET_DEPLOY_RECORD", ROOT / "build" / "deployed" / "local.json"))


@pytest.fixture
def release(host) -> Release:
    """The release the deploy record says this host serves (opened and verified on the controller)."""
    name = host.backend.get_hostname()
    return deployed(RECORD, name)


@pytest.fixture
def triton(host):
    """`docker inspect` of the Triton container on the host."""
    return json.loads(host.check_output("docker inspect tritonserver"))[0]
