"""Image source `build`: the model_conversion role built the real conversion image from the context that
`tritonfleet image-context` made, the same image as scripts/build-images.sh's; rebuilt it when a source file changed;
and the release key followed the image's inputs."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
PROJECT = Path(__file__).resolve().parents[5]
LABEL = "org.tritonfleet.inputs-sha256"
IMAGE = "molecule/convert-build:1"


def state(name: str) -> dict:
    return json.loads((EPHEMERAL / name).read_text())


def inspect(image: str) -> dict:
    return json.loads(subprocess.check_output(["docker", "image", "inspect", image]))[0]


def reference() -> str:
    """The image scripts/build-images.sh built in prepare."""
    name = os.environ.get("TRITONFLEET_CONVERT_IMAGE")
    if name:
        return name
    images = (PROJECT / "docker" / "images.yml").read_text()
    return re.search(r"^convert: *(\S+)", images, re.M).group(1)


def run_in(image: str, *argv: str) -> str:
    return subprocess.check_output(["docker", "run", "--rm", "--network", "none", "--entrypoint", argv[0], image,
                                    *argv[1:]], text=True)


def test_the_role_built_the_image_build_images_sh_built():
    assert state("converge.json")["image_id"] == inspect(reference())["Id"]


def test_the_role_and_build_images_sh_computed_the_same_inputs():
    assert inspect(reference())["Config"]["Labels"][LABEL] == state("converge.json")["inputs"]


def test_a_changed_source_file_rebuilt_the_image_with_the_new_inputs():
    before, after = state("converge.json"), state("side_effect.json")
    image = inspect(IMAGE)
    assert after["inputs"] != before["inputs"]
    assert image["Config"]["Labels"][LABEL] == after["inputs"]
    assert image["Id"] == after["image_id"] != before["image_id"]


def test_the_rebuilt_image_runs_the_changed_project():
    assert run_in(IMAGE, "python", "-c", "import tritonfleet.molecule_side_effect as m; print(m.SIDE_EFFECT)") \
        == "molecule\n"


def test_the_release_key_follows_the_image_inputs():
    before, after = state("converge.json"), state("side_effect.json")
    assert before["builder"] == f"{IMAGE} (inputs {before['inputs']})"
    assert after["builder"] == f"{IMAGE} (inputs {after['inputs']})"
    assert after["key"] != before["key"]


def pins(text: str) -> dict[str, str]:
    """`name==version` lines as {normalized name: version}."""
    return {re.sub(r"[-_.]+", "-", m.group(1)).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)}


def test_the_image_has_exactly_the_locked_versions():
    frozen = pins(run_in(IMAGE, "pip", "freeze", "--all"))
    frozen.pop("pip")  # the venv's own; the project itself is `tritonfleet @ file://...`
    assert frozen == pins((PROJECT / "docker" / "conversion-requirements" / "local.txt").read_text())


@pytest.mark.parametrize("path", ["/opt/tritonfleet/model_repository/ensemble/config.pbtxt.j2",
                                  "/opt/venv/bin/tritonfleet"])
def test_the_image_has_the_layout_of_the_dockerfile(path):
    run_in(IMAGE, "test", "-f", path)


def test_no_build_context_is_left(host):
    assert not host.file("/var/lib/tritonfleet/convert/context").exists
    assert list((EPHEMERAL / "releases").glob(".convert-context-*")) == []
