"""testinfra for the deployed local fleet.

Run (scripts/test-deploy.sh does) from the repository root against the server group of the local inventory:

    .venv/bin/pytest tests/infra --hosts='ansible://triton_servers' \
        --ansible-inventory=inventories/local --connection=ansible

The controller-side facts (the repository checksum in the controller's cache, the server's address for the
HTTP probe) come from the same inventory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TRITONFLEET_FLEET_CACHE", ROOT / "build" / "fleet"))


def tree_checksum(path: Path) -> str:
    """The model_repository role's checksum recipe: sha256 of the sorted `sha256  ./path` lines."""
    lines = []
    for file in path.rglob("*"):
        if file.is_file() and "__pycache__" not in file.parts:
            rel = "./" + file.relative_to(path).as_posix()
            lines.append((rel.encode(), f"{hashlib.sha256(file.read_bytes()).hexdigest()}  {rel}\n"))
    return hashlib.sha256("".join(line for _, line in sorted(lines)).encode()).hexdigest()


@pytest.fixture(scope="session")
def controller_repository() -> Path:
    """The most recently converted model repository in the controller's cache (what site.yml deployed)."""
    keys = sorted(CACHE.glob("*/key.json"), key=lambda p: p.stat().st_mtime)
    if not keys:
        pytest.fail(f"no converted model in {CACHE}: run scripts/deploy-local.sh first")
    return keys[-1].parent / "model_repository"


@pytest.fixture(scope="session")
def controller_checksum(controller_repository: Path) -> str:
    return tree_checksum(controller_repository)


@pytest.fixture
def triton(host):
    """`docker inspect` of the Triton container on the host."""
    return json.loads(host.check_output("docker inspect tritonserver"))[0]
