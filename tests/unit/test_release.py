"""The release contract: one spec, one key, one SHA256SUMS that `sha256sum` verifies, a record of what is deployed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tritonfleet import layout
from tritonfleet import release as release_module
from tritonfleet.cli import build_parser, main
from tritonfleet.errors import NotBuiltError, ReleaseError, UsageError
from tritonfleet.release import (
    CONVERT,
    SERVE,
    SUMS_FILE,
    ModelOptions,
    Release,
    ReleaseSpec,
    build,
    conversion_key,
    deployed,
    locate,
    read_record,
    record_deploy,
    release_key,
    tree_checksum,
)


def spec_of(model: Path, **common) -> ReleaseSpec:
    """Two models of one tiny checkpoint: `alpha` (fp32) and `beta` (int8, its own golden text)."""
    return ReleaseSpec.from_dict({
        "models": [
            {"name": "alpha", "model": str(model)},
            {"name": "beta", "model": str(model), "golden_texts": ["beta's own check"],
             "options": {"formats": ["onnx", "int8"], "format": "int8", "int8_min_agreement": 0.5}},
        ],
        "options": {"formats": ["onnx"], "max_batch_size": 8, **common},
    })


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory) -> tuple[Release, Path, Path]:
    root = tmp_path_factory.mktemp("release")
    releases, conversions = root / "releases", root / "conversions"
    return build(spec_of(tiny_model), releases, conversions), releases, conversions


def test_the_drill_s_new_releases_never_collide_in_one_folder(built, tmp_path):
    """scripts/chaos.sh's rolling-deploy and swarm-rolling-update each make a new release in the drill's one work
    folder; with a fixed folder name the second died in FileExistsError after 1,292 s of drill."""
    from tritonfleet.bench.chaos import new_release

    good = built[0]
    first, second = new_release(good, tmp_path, "update"), new_release(good, tmp_path, "update")
    assert first.path != second.path and first.id != second.id
    assert {Release.open(first.path).id, Release.open(second.path).id} == {first.id, second.id}


# --- the files and their checksums -------------------------------------------------------------------------


def test_sha256sum_verifies_the_release(built):
    release = built[0]
    proc = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", SUMS_FILE], cwd=release.path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_id_is_the_sha256_of_sha256sums_and_the_tree_checksum(built, capsys):
    release = built[0]
    sums = subprocess.run(["sha256sum", SUMS_FILE], cwd=release.path, capture_output=True, text=True, check=True)
    assert sums.stdout.split()[0] == release.id
    assert tree_checksum(release.path) == release.id
    assert main(["checksum", str(release.path)]) == 0
    assert capsys.readouterr().out.strip() == release.id


def test_every_file_but_sha256sums_is_listed(built):
    release = built[0]
    files = {p.relative_to(release.path).as_posix() for p in release.path.rglob("*") if p.is_file()}
    assert set(release.checksums) == files - {SUMS_FILE}


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: (p / "alpha_classifier" / "1" / "model.py").write_text("# changed\n"), "changed alpha_classifier"),
    (lambda p: (p / "alpha" / "golden.json").unlink(), "missing alpha/golden.json"),
    (lambda p: (p / "extra.txt").write_text("x"), "not listed extra.txt"),
])
def test_a_damaged_copy_is_refused_naming_the_file(built, tmp_path, damage, message):
    copy = tmp_path / "copy"
    shutil.copytree(built[0].path, copy)
    damage(copy)
    with pytest.raises(ReleaseError, match=message):
        Release.open(copy)


def test_sha256sum_finds_a_changed_file_too(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built[0].path, copy)
    (copy / "beta" / "golden.json").write_text("{}")
    proc = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", SUMS_FILE], cwd=copy,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "beta/golden.json" in proc.stdout


# --- the models inside ----------------------------------------------------------------------------------------


def test_each_model_has_its_triton_models_and_golden_file(built):
    release = built[0]
    assert release.names() == ["alpha", "beta"]
    for name in release.names():
        for triton_name in layout.model_names(name).all():
            assert (release.path / triton_name / "config.pbtxt").is_file(), triton_name
        assert json.loads(release.golden_file(name).read_text())["labels"] == ["negative", "neutral", "positive"]


def test_each_model_keeps_its_own_options_and_texts(built):
    release = built[0]
    alpha, beta = release.models
    assert (alpha.variant, alpha.options["format"], alpha.options["max_batch_size"]) == ("fp32", "onnx", 8)
    assert (beta.variant, beta.options["format"], beta.options["max_batch_size"]) == ("int8", "int8", 8)
    beta_texts = [e["text"] for e in json.loads(release.golden_file("beta").read_text())["entries"]]
    alpha_texts = [e["text"] for e in json.loads(release.golden_file("alpha").read_text())["entries"]]
    assert "beta's own check" in beta_texts and "beta's own check" not in alpha_texts


def test_model_texts_file_extends_the_golden_file(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / layout.MODEL_TEXTS_FILE).write_text(json.dumps({"golden": ["from the model folder"],
                                                             "agreement": ["only for int8"]}))
    spec = ReleaseSpec.from_dict({"models": [{"name": "m", "model": str(model), "options": {"formats": ["onnx"]}}]})
    release = build(spec, tmp_path / "r", tmp_path / "c")
    texts = [e["text"] for e in json.loads(release.golden_file("m").read_text())["entries"]]
    assert "from the model folder" in texts and "only for int8" not in texts


# --- keys: the build cache ----------------------------------------------------------------------------------


def test_the_same_spec_finds_the_same_release_without_converting(built, tiny_model, monkeypatch):
    release, releases, conversions = built
    monkeypatch.setattr("tritonfleet.convert.convert", _no_conversion)
    assert locate(spec_of(tiny_model), releases).id == release.id
    assert build(spec_of(tiny_model), releases, conversions).id == release.id


def test_a_serving_option_makes_a_new_release_from_the_cached_conversions(built, tiny_model, monkeypatch):
    release, releases, conversions = built
    monkeypatch.setattr("tritonfleet.convert.convert", _no_conversion)
    other = build(spec_of(tiny_model, max_batch_size=16), releases, conversions)
    assert other.key != release.key and other.id != release.id
    assert other.model("alpha").options["max_batch_size"] == 16
    assert release_key(spec_of(tiny_model)) == release.key  # the first one is still there, unchanged
    assert Release.open(release.path).id == release.id


def test_locate_of_a_spec_never_built_says_so(built, tiny_model):
    with pytest.raises(NotBuiltError, match="is not built"):
        locate(spec_of(tiny_model, max_batch_size=2), built[1])


def test_conversion_key_covers_conversion_options_and_model_contents_not_serving(tiny_model, tmp_path):
    base = spec_of(tiny_model).models[0]
    key = conversion_key(base)
    assert conversion_key(spec_of(tiny_model, max_batch_size=4).models[0]) == key
    assert conversion_key(spec_of(tiny_model, opset=18).models[0]) != key
    assert conversion_key(base, builder="another-image") != key
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    moved = ReleaseSpec.from_dict({"models": [{"name": "alpha", "model": str(copy)}],
                                   "options": {"formats": ["onnx"], "max_batch_size": 8}}).models[0]
    assert conversion_key(moved) == key, "the key follows the contents, not the path"
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"neutral"', '"meh"'))
    assert conversion_key(moved) != key


def test_a_change_of_the_code_that_makes_a_stage_changes_its_keys(tiny_model, tmp_path, monkeypatch):
    """New conversion code reconverts, new repository templates rebuild: an upgrade never hits a stale cache."""
    spec = spec_of(tiny_model)
    before = (conversion_key(spec.models[0]), release_key(spec))
    templates = tmp_path / "templates"
    shutil.copytree(Path(__file__).resolve().parents[2] / "model_repository", templates)
    monkeypatch.setattr("tritonfleet.paths.TEMPLATE_DIR", templates)
    assert (conversion_key(spec.models[0]), release_key(spec)) == before
    (templates / "ensemble" / "config.pbtxt.j2").write_text("# changed\n")
    assert conversion_key(spec.models[0]) == before[0] and release_key(spec) != before[1]
    monkeypatch.setitem(release_module._STAGE_CODE, CONVERT, ("convert.py", "adapter.py"))
    assert conversion_key(spec.models[0]) != before[0]


def _no_conversion(*args, **kwargs):
    raise AssertionError("converted although the conversion artifacts are cached")


# --- the spec and the options -------------------------------------------------------------------------------


#: A hub model's revision as a release needs it: a commit.
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub(name: str = "a", model: str = "m", **entry) -> dict:
    """A model entry of a spec: a hub model at a commit, unless the entry says otherwise."""
    return {"name": name, "model": model, "revision": COMMIT, **entry}


@pytest.mark.parametrize(("data", "message"), [
    ({"models": []}, "'models' must be a non-empty list"),
    ({"models": [{"name": "a", "model": "org/model"}]}, "hub model org/model needs 'revision', the 40-character "
                                                         "commit you validated \\(got 'none'\\)"),
    ({"models": [hub(model="org/model", revision="main")]}, "40-character commit .*got 'main'"),
    ({"models": [hub(model="org/model", revision="v1.0")]}, "40-character commit"),
    ({"models": [hub(model="org/model", revision=COMMIT.upper())]}, "40-character commit"),
    ({"models": [hub(model="org/model", revision=COMMIT[:-1])]}, "40-character commit"),
    ({"models": [hub(model="org/model", revision=COMMIT + "\n")]}, "40-character commit"),
    ({"models": [hub("Bad-Name")]}, "must match"),
    ({"models": [hub("a\n")]}, "must match"),
    ({"models": [hub(options={"max_bach_size": 4})]}, "unknown option.*max_bach_size"),
    ({"models": [hub(options={"max_batch_size": "many"})]}, "not a valid int"),
    ({"models": [hub(colour=1)]}, "unknown key.*colour"),
    ({"models": [hub("a"), hub("a", "n")]}, "clash"),
    ({"models": [hub("a"), hub("a_tokenizer", "n")]}, "clash"),
    ({"models": [{"name": "a"}]}, "'model' .* is required"),
    ({"models": [hub()], "option": {}}, "unknown key"),
])
def test_a_bad_spec_is_refused_naming_what_is_wrong(data, message):
    with pytest.raises(UsageError, match=message):
        ReleaseSpec.from_dict(data)


def test_a_hub_model_at_a_commit_and_a_local_model_without_a_revision_are_taken(tmp_path):
    spec = ReleaseSpec.from_dict({"models": [hub(model="org/model"), {"name": "b", "model": str(tmp_path)}]})
    assert [m.source_identity() for m in spec.models] == [f"org/model@{COMMIT}", spec.models[1].source_identity()]
    assert spec.models[1].revision == "main"


def test_a_models_own_options_win_over_the_common_ones():
    spec = ReleaseSpec.from_dict({"models": [hub("a", options={"max_batch_size": 4}), hub("b")],
                                  "options": {"max_batch_size": 16}})
    assert [m.options.max_batch_size for m in spec.models] == [4, 16]


def test_option_strings_from_ansible_are_converted():
    opts = ModelOptions.from_dict({"max_batch_size": "16", "warmup": "false", "preferred_batch_sizes": "4,8",
                                   "formats": "onnx,int8", "format": "int8", "sub_batch_size": ""})
    assert (opts.max_batch_size, opts.warmup, opts.preferred_batch_sizes, opts.sub_batch_size) == (16, False,
                                                                                                  (4, 8), None)


def test_every_option_has_a_flag_that_gives_it_back():
    """The flags are derived from the options: non-default values survive to_cli_args -> argparse."""
    wanted = ModelOptions(formats=("onnx", "int8"), max_length=64, int8_per_channel=False, opset=18,
                          backend="onnxruntime", format="int8", max_batch_size=3, preferred_batch_sizes=(1, 2),
                          instance_count=2, instance_kind="KIND_GPU", warmup=False, fp16=True, tensorrt=True,
                          sub_batch_size=1, max_text_bytes=99, threads=2)
    parser = build_parser()
    convert_args = parser.parse_args(["convert", *wanted.to_cli_args(CONVERT)])
    repo_args = parser.parse_args(["build-repo", *wanted.to_cli_args(SERVE)])
    from tritonfleet.release import options_from_args

    got = options_from_args(repo_args, SERVE, options_from_args(convert_args, CONVERT))
    assert got == wanted
    assert set(wanted.changed()) == {k for k in wanted.as_dict() if getattr(wanted, k) != getattr(ModelOptions(), k)}


def test_the_role_argument_spec_of_the_options_is_generated_from_them(capsys):
    """roles/model_conversion/meta/argument_specs.yml holds `tritonfleet release options --format argument-spec`."""
    assert main(["release", "options", "--format", "argument-spec"]) == 0
    generated = capsys.readouterr().out
    spec_file = Path(__file__).resolve().parents[2] / "roles" / "model_conversion" / "meta" / "argument_specs.yml"
    text = spec_file.read_text()
    begin, end = "# BEGIN model options (generated", "# END model options"
    assert begin in text and end in text, f"{spec_file} has no generated options block"
    block = text.split(begin, 1)[1].split("\n", 1)[1].split(end, 1)[0].splitlines()[:-1]
    indent = len(block[0]) - len(block[0].lstrip(" ")) - 2
    assert [line[indent:] for line in block] == generated.splitlines(), \
        "regenerate the block with: tritonfleet release options --format argument-spec"


# --- the deploy record ---------------------------------------------------------------------------------------


def test_the_record_says_what_each_host_and_the_fleet_serve(built, tiny_model, tmp_path):
    first, releases, conversions = built
    second = build(spec_of(tiny_model, max_batch_size=16), releases, conversions)
    record = tmp_path / "deployed" / "local.json"
    record_deploy(record, first, "host-1")
    record_deploy(record, first, "host-2")
    record_deploy(record, first)
    record_deploy(record, second, "host-1")
    assert deployed(record, "host-1").id == second.id
    assert deployed(record, "host-2").id == first.id
    assert deployed(record).id == first.id
    assert [e["id"] for e in read_record(record)["hosts"]["host-1"]] == [second.id, first.id]
    assert deployed(record, "host-1", previous=True).id == first.id
    # Going back is one more activation, not a guess from file times.
    record_deploy(record, first, "host-1")
    assert deployed(record, "host-1").id == first.id
    assert deployed(record, "host-1", previous=True).id == second.id
    with pytest.raises(ReleaseError, match="no other release"):
        deployed(record, "host-2", previous=True)


def test_the_record_of_a_fleet_never_deployed_is_a_clear_error(tmp_path):
    with pytest.raises(ReleaseError, match="no release was deployed to tf-server-1"):
        deployed(tmp_path / "none.json", "tf-server-1")


def test_cli_prints_the_release_as_json_and_exits_3_when_not_built(built, tiny_model, tmp_path, capsys,
                                                                   monkeypatch):
    release, releases, _ = built
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"models": [m for m in spec_of(tiny_model).as_dict()["models"]],
                                     "builder": ""}))
    assert main(["release", "build", "--spec", str(spec_file), "--releases", str(releases), "--locate-only"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["key"], shown["path"]) == (release.id, release.key, str(release.path))
    assert [m["name"] for m in shown["models"]] == ["alpha", "beta"] and shown["checksums"]
    code = main(["release", "build", "--spec", str(spec_file), "--releases", str(tmp_path / "empty"),
                 "--locate-only"])
    assert code == 3 and "is not built" in capsys.readouterr().err
