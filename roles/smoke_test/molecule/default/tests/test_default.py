"""The smoke_test role ran the (stand-in) CLI on the controller, once per endpoint, with the release."""

import os
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def calls() -> list[str]:
    return (EPHEMERAL / "calls.log").read_text().splitlines()


@pytest.mark.parametrize(
    "call",
    [
        f"grpc 192.0.2.10:8001 {EPHEMERAL}/release",
        f"http 192.0.2.10:8000 {EPHEMERAL}/release",
    ],
)
def test_endpoint_was_smoke_tested_from_the_controller(call):
    assert call in calls()


def test_host_needs_no_tritonfleet_install(host):
    assert not host.exists("tritonfleet")
