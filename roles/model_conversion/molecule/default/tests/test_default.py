"""The model_conversion role converted files/model with the stand-in image into the controller's cache."""

import json
import os
from pathlib import Path

import pytest

CACHE = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "cache"


def entry() -> Path:
    keys = list(CACHE.glob("*/key.json"))
    assert len(keys) == 1, keys
    return keys[0].parent


def test_cache_entry_is_named_by_its_key():
    assert json.loads((entry() / "key.json").read_text())["key"] == entry().name


@pytest.mark.parametrize(
    ("field", "value"),
    [("backend", "python"), ("formats", ["onnx", "torchscript"]), ("max_batch_size", 4), ("instance_kind", "KIND_CPU")],
)
def test_cache_key_input(field, value):
    assert json.loads((entry() / "key.json").read_text())["inputs"][field] == value


def test_cache_key_names_the_local_model_by_checksum():
    assert json.loads((entry() / "key.json").read_text())["inputs"]["model"].startswith("dir:")


@pytest.mark.parametrize("name", ["golden.json", "manifest.json", "model_repository/sentiment/config.pbtxt"])
def test_artifact_is_in_the_cache(name):
    assert (entry() / name).is_file()


@pytest.mark.parametrize("model", ["sentiment", "sentiment_tokenizer", "sentiment_classifier", "sentiment_postprocess"])
def test_repository_has_model(model):
    assert (entry() / "model_repository" / model / "config.pbtxt").is_file()


@pytest.mark.parametrize(
    "arg", ["--backend python", "--max-batch-size 4", "--instance-count 1", "--instance-kind KIND_CPU"]
)
def test_build_repo_got_argument(arg):
    assert arg in (entry() / "model_repository" / "sentiment" / "config.pbtxt").read_text()


def test_convert_got_the_formats():
    assert "--formats onnx,torchscript" in json.loads((entry() / "manifest.json").read_text())["argv"]


@pytest.mark.parametrize("pattern", [".staging-*", ".incoming-*"])
def test_no_scratch_directory_is_left_in_the_cache(pattern):
    assert not list(CACHE.glob(pattern))


def test_work_directory_is_removed_on_the_host(host):
    assert host.check_output("ls -A /var/lib/tritonfleet/convert") == ""


def test_no_conversion_container_is_left(host):
    assert host.check_output("docker ps -aq --filter name=tritonfleet-") == ""
