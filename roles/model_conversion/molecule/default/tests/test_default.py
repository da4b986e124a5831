"""The model_conversion role built a release of two models with the stand-in image, fetched it into the
controller's release cache, verified it there and published it as the fact model_conversion_release."""

import json
import os
from pathlib import Path

import pytest

from tritonfleet.release import Release, ReleaseSpec, release_key

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
RELEASES = EPHEMERAL / "releases"
MODEL = Path(__file__).resolve().parents[1] / "files" / "model"


def release() -> Release:
    (entry,) = [p for p in RELEASES.iterdir() if not p.name.startswith(".")]
    return Release.open(entry)


def test_the_release_is_cached_under_the_key_of_the_models_and_options():
    spec = ReleaseSpec.from_dict({"models": [{"name": "alpha", "model": str(MODEL)},
                                             {"name": "beta", "model": str(MODEL), "options": {"max_batch_size": 4}}],
                                  "options": {"formats": ["onnx"]}, "builder": "molecule/convert-stub:1"})
    assert release().path.name == release_key(spec)


def test_the_published_fact_is_the_cached_release():
    published = json.loads((EPHEMERAL / "published.json").read_text())
    assert (published["id"], published["path"]) == (release().id, str(release().path))


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_each_model_is_in_the_release(name):
    assert name in release().names()
    assert (release().path / name / "golden.json").is_file()


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_the_container_read_the_local_model_from_its_copy(name):
    spec = json.loads((release().path / "spec.json").read_text())
    assert {m["name"]: m["model"] for m in spec["models"]}[name] == f"/work/run/models/{name}"


def test_the_container_got_each_models_options():
    spec = json.loads((release().path / "spec.json").read_text())
    assert spec["options"] == {"formats": ["onnx"]}
    assert {m["name"]: m.get("options", {}) for m in spec["models"]} == {"alpha": {}, "beta": {"max_batch_size": 4}}


@pytest.mark.parametrize("arg", ["--expect-key {key}", "--conversions /work/conversions", "--spec /work/run/spec.json"])
def test_the_container_got_the_argument(arg):
    assert arg.format(key=release().key) in (release().path / "argv.txt").read_text()


def test_no_staging_file_is_left_in_the_cache():
    assert [p.name for p in RELEASES.iterdir() if p.name.startswith(".")] == []


def test_the_conversion_cache_stays_on_the_host(host):
    assert host.file("/var/lib/tritonfleet/convert/conversions/used-by-the-stand-in").exists


def test_the_build_directory_is_removed_on_the_host(host):
    assert host.check_output("ls -A /var/lib/tritonfleet/convert") == "conversions"


def test_no_conversion_container_is_left(host):
    assert host.check_output("docker ps -aq --filter name=tritonfleet-") == ""
