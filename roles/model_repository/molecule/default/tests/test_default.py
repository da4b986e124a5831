"""Facts about a host converged by the model_repository role: releases v1..v3 in prepare, v4 in converge."""

import json
import os
from pathlib import Path

import pytest

from tritonfleet.release import Release

ROOT = "/opt/tritonfleet/model_repository"
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SOURCES = EPHEMERAL / "sources"


def release_id(version: int) -> str:
    """The id of test release v<N> (sealed on the controller by tests/support/make_release.py)."""
    return Release.open(SOURCES / f"v{version}").id


def release(version: int) -> str:
    return f"{ROOT}/releases/{release_id(version)}"


def test_current_is_a_symlink(host):
    assert host.file(f"{ROOT}/current").is_symlink


def test_current_points_at_the_newest_release(host):
    assert host.file(f"{ROOT}/current").linked_to == release(4)


def test_previous_points_at_the_release_served_before(host):
    assert host.file(f"{ROOT}/previous").linked_to == release(3)


@pytest.mark.parametrize("version", [3, 4])
def test_kept_release_exists(host, version):
    assert host.file(release(version)).is_directory


@pytest.mark.parametrize("version", [1, 2])
def test_old_release_is_pruned(host, version):
    assert not host.file(release(version)).exists


def test_no_staging_directory_is_left(host):
    assert host.run(f"ls -A {ROOT} | grep -c '^.staging-'").stdout.strip() == "0"


def test_sha256sum_verifies_the_current_release(host):
    assert host.run(f"cd {ROOT}/current && sha256sum --check --strict --quiet SHA256SUMS").rc == 0


def test_current_sha256sums_is_the_release_id(host):
    assert host.file(f"{ROOT}/current/SHA256SUMS").sha256sum == release_id(4)


@pytest.mark.parametrize("path", ["sentiment/config.pbtxt", "sentiment_classifier/1/model.py", "SHA256SUMS"])
def test_release_file_is_world_readable(host, path):
    assert host.file(f"{ROOT}/current/{path}").mode == 0o644


@pytest.mark.parametrize("path", ["sentiment", "sentiment_classifier/1"])
def test_release_directory_is_world_readable(host, path):
    assert host.file(f"{ROOT}/current/{path}").mode == 0o755


@pytest.mark.parametrize("path", ["sentiment/config.pbtxt", "sentiment/1"])
def test_release_file_is_root_owned(host, path):
    assert host.file(f"{ROOT}/current/{path}").user == "root"


def test_the_deploy_record_names_the_current_release(host):
    record = json.loads((EPHEMERAL / "deployed.json").read_text())
    (entries,) = record["hosts"].values()
    assert [e["id"] for e in entries] == [release_id(v) for v in (4, 3, 2, 1)]
