"""Facts about a host converged by the model_repository role: releases v1..v3 in prepare, v4 in converge."""

import hashlib
import os
from pathlib import Path

import pytest

ROOT = "/opt/tritonfleet/model_repository"
SOURCES = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "sources"
CHECKSUM = (
    "cd {} && find . -type f -not -path '*/__pycache__/*' -print0"
    " | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1"
)


def tree_checksum(path: Path) -> str:
    """The role's checksum recipe, in Python: sha256 of the sorted `sha256  ./path` lines."""
    lines = []
    for file in path.rglob("*"):
        if file.is_file() and "__pycache__" not in file.parts:
            rel = "./" + file.relative_to(path).as_posix()
            lines.append((rel.encode(), f"{hashlib.sha256(file.read_bytes()).hexdigest()}  {rel}\n"))
    text = "".join(line for _, line in sorted(lines))
    return hashlib.sha256(text.encode()).hexdigest()


def release(version: int) -> str:
    return f"{ROOT}/releases/{tree_checksum(SOURCES / f'v{version}')}"


def test_current_is_a_symlink(host):
    assert host.file(f"{ROOT}/current").is_symlink


def test_current_points_at_the_newest_release(host):
    assert host.file(f"{ROOT}/current").linked_to == release(4)


@pytest.mark.parametrize("version", [3, 4])
def test_kept_release_exists(host, version):
    assert host.file(release(version)).is_directory


@pytest.mark.parametrize("version", [1, 2])
def test_old_release_is_pruned(host, version):
    assert not host.file(release(version)).exists


def test_no_staging_directory_is_left(host):
    assert host.run(f"ls -A {ROOT} | grep -c '^.staging-'").stdout.strip() == "0"


def test_current_checksum_matches_the_controller(host):
    assert host.check_output(CHECKSUM.format(f"{ROOT}/current/")) == tree_checksum(SOURCES / "v4")


@pytest.mark.parametrize("path", ["sentiment/config.pbtxt", "sentiment_classifier/1/model.py"])
def test_release_file_is_world_readable(host, path):
    assert host.file(f"{ROOT}/current/{path}").mode == 0o644


@pytest.mark.parametrize("path", ["sentiment", "sentiment_classifier/1"])
def test_release_directory_is_world_readable(host, path):
    assert host.file(f"{ROOT}/current/{path}").mode == 0o755


@pytest.mark.parametrize("path", ["sentiment/config.pbtxt", "sentiment/1"])
def test_release_file_is_root_owned(host, path):
    assert host.file(f"{ROOT}/current/{path}").user == "root"
