"""build-repo: every generated config.pbtxt parsed back with Triton's ModelConfig protobuf, field by field."""

from __future__ import annotations

import json
import shutil

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonfleet import layout
from tritonfleet.errors import UsageError
from tritonfleet.release import FORMATS, RELEASE_FILE, SERVE, ModelOptions
from tritonfleet.repo import build_repository, parse_config, render_configs

N = layout.MODELS
DT = mc.DataType


def options(**kw) -> ModelOptions:
    """Options for the tiny artifacts, which hold every export format."""
    return ModelOptions(formats=FORMATS, **kw)


@pytest.fixture(scope="module", params=[("python", "onnx"), ("onnxruntime", "int8"), ("pytorch", "torchscript"),
                                        ("python", "torchscript")])
def built(request, tiny_artifacts, tmp_path_factory):
    backend, fmt = request.param
    opts = options(backend=backend, format=fmt, max_batch_size=32, preferred_batch_sizes=(8, 16),
                   max_queue_delay_us=1500, instance_count=2, tokenizer_instance_count=3)
    repo = tmp_path_factory.mktemp("repo") / backend
    info = build_repository([(N.ensemble, tiny_artifacts, opts)], repo)
    configs = {name: parse_config(layout.config_path(repo, name).read_text(), name) for name in N.all()}
    return repo, opts, info, configs


def _io(tensors):
    return {t.name: (t.data_type, list(t.dims)) for t in tensors}


def test_ensemble_takes_batched_text_and_returns_label_and_scores(built):
    _, opts, _, cfg = built
    c = cfg[N.ensemble]
    assert c.name == N.ensemble and c.platform == "ensemble"
    assert c.max_batch_size == opts.max_batch_size
    assert _io(c.input) == {layout.TEXT: (DT.TYPE_STRING, [1])}
    assert _io(c.output) == {layout.LABEL: (DT.TYPE_STRING, [1]), layout.SCORES: (DT.TYPE_FP32, [3])}


def test_ensemble_steps_chain_tokenizer_classifier_postprocess(built):
    steps = built[3][N.ensemble].ensemble_scheduling.step
    assert [s.model_name for s in steps] == [N.tokenizer, N.classifier, N.postprocess]
    assert dict(steps[0].input_map) == {layout.TEXT: layout.TEXT}
    assert set(steps[0].output_map.values()) == set(steps[1].input_map.values())
    assert set(steps[1].input_map) == {layout.INPUT_IDS, layout.ATTENTION_MASK}
    assert list(steps[1].output_map.values()) == list(steps[2].input_map.values())
    assert dict(steps[2].output_map) == {layout.LABEL: layout.LABEL, layout.SCORES: layout.SCORES}


def test_tokenizer_config(built):
    _, opts, _, cfg = built
    c = cfg[N.tokenizer]
    assert c.backend == "python" and c.max_batch_size == opts.max_batch_size
    assert _io(c.output) == {layout.INPUT_IDS: (DT.TYPE_INT64, [-1]), layout.ATTENTION_MASK: (DT.TYPE_INT64, [-1])}
    assert [(g.count, g.kind) for g in c.instance_group] == [(3, mc.ModelInstanceGroup.KIND_CPU)]
    params = json.loads(c.parameters["tokenizer"].string_value)
    assert params["max_length"] == 128 and params["max_text_bytes"] == opts.max_text_bytes


def test_classifier_keeps_the_articles_tensor_interface(built):
    _, opts, _, cfg = built
    c = cfg[N.classifier]
    assert c.backend == opts.backend
    assert _io(c.input) == {layout.INPUT_IDS: (DT.TYPE_INT64, [-1]), layout.ATTENTION_MASK: (DT.TYPE_INT64, [-1])}
    assert _io(c.output) == {layout.LOGITS: (DT.TYPE_FP32, [3])}
    assert all(i.allow_ragged_batch == (opts.backend == "python") for i in c.input)


def test_classifier_batching_instances_and_warmup(built):
    _, opts, _, cfg = built
    c = cfg[N.classifier]
    assert c.max_batch_size == 32
    assert list(c.dynamic_batching.preferred_batch_size) == [8, 16]
    assert c.dynamic_batching.max_queue_delay_microseconds == 1500
    assert [(g.count, g.kind) for g in c.instance_group] == [(2, mc.ModelInstanceGroup.KIND_CPU)]
    (w,) = c.model_warmup
    assert w.batch_size == 1 and set(w.inputs) == {layout.INPUT_IDS, layout.ATTENTION_MASK}
    assert all(v.zero_data and list(v.dims) == [16] for v in w.inputs.values())


def test_classifier_model_file_matches_backend(built):
    repo, opts, _, cfg = built
    files = {p.name for p in layout.version_dir(repo, N.classifier).iterdir()}
    model_file = layout.FORMAT_FILES[opts.format]
    assert model_file in files
    if opts.backend == "python":
        assert "model.py" in files and cfg[N.classifier].default_model_filename == ""
        runner = json.loads(cfg[N.classifier].parameters["runner"].string_value)
        assert runner["model_file"] == model_file
    else:
        assert "model.py" not in files and cfg[N.classifier].default_model_filename == model_file


def test_postprocess_labels_come_from_id2label(built):
    c = built[3][N.postprocess]
    params = json.loads(c.parameters["postprocess"].string_value)
    assert params["labels"] == ["negative", "neutral", "positive"]
    assert _io(c.output) == {layout.LABEL: (DT.TYPE_STRING, [1]), layout.SCORES: (DT.TYPE_FP32, [3])}


def test_release_json_records_the_options_and_variant(built, tiny_artifacts):
    repo, opts, release, _ = built
    saved = json.loads((repo / RELEASE_FILE).read_text())
    (model,) = saved["models"]
    # The serving options as given, the conversion options as the artifacts were converted.
    assert {k: model["options"][k] for k in opts.stage(SERVE)} == opts.stage(SERVE)
    converted = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())["options"]
    assert {k: model["options"][k] for k in converted} == converted
    assert model["variant"] == ("int8" if opts.format == "int8" else "fp32")
    assert saved["key"] == release.key and len(release.id) == 64


def test_gpu_tensorrt_fp16_config(tiny_artifacts):
    from tritonfleet.convert import load_manifest

    opts = options(backend="onnxruntime", format="onnx", instance_kind="KIND_GPU", tensorrt=True, fp16=True)
    c = parse_config(render_configs(load_manifest(tiny_artifacts), opts)[N.classifier])
    assert c.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (acc,) = c.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backend": "pytorch", "format": "onnx"}, "serves TorchScript"),
    ({"backend": "onnxruntime", "format": "torchscript"}, "serves ONNX"),
    ({"backend": "tensorflow"}, "choose from"),
    ({"preferred_batch_sizes": (128,)}, "preferred_batch_sizes"),
    ({"tensorrt": True}, "needs the onnxruntime backend on KIND_GPU"),
    ({"instance_count": 0}, "at least 1"),
    ({"sub_batch_size": -1}, "sub_batch_size"),
    ({"format": "int8", "sub_batch_size": 2}, "one text per run"),
    ({"format": "int8", "sub_batch_size": 0}, "depend on the texts batched with it"),
])
def test_bad_options_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(UsageError, match=message):
        options(**kwargs).validate()


@pytest.mark.parametrize("sub_batch_size", [0, 4])
def test_python_runner_gets_its_sub_batch_size(tiny_artifacts, sub_batch_size):
    configs = render_configs(json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text()),
                             options(sub_batch_size=sub_batch_size, threads=2))
    runner = json.loads(parse_config(configs[N.classifier]).parameters["runner"].string_value)
    assert (runner["sub_batch_size"], runner["threads"]) == (sub_batch_size, 2)


@pytest.mark.parametrize(("fmt", "explicit", "effective"),
                         [("onnx", None, 0), ("int8", None, 1), ("int8", 1, 1), ("torchscript", 3, 3)])
def test_sub_batch_size_defaults_to_one_row_per_run_for_int8(tiny_artifacts, fmt, explicit, effective):
    configs = render_configs(json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text()),
                             options(format=fmt, sub_batch_size=explicit))
    runner = json.loads(parse_config(configs[N.classifier]).parameters["runner"].string_value)
    assert runner["sub_batch_size"] == effective


def test_python_runner_knows_the_vocabulary_size(tiny_artifacts):
    manifest = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())
    runner = json.loads(parse_config(render_configs(manifest, options())[N.classifier])
                        .parameters["runner"].string_value)
    assert runner["vocab_size"] == manifest["vocab_size"] > 1000


def test_failed_build_leaves_the_previous_repository(tiny_artifacts, tmp_path):
    """A build that fails half-way (here: the tokenizer file is missing, found only while copying) leaves the
    previous repository as it was and no scratch folder behind."""
    repo = tmp_path / "repo"
    build_repository([(N.ensemble, tiny_artifacts, options())], repo)
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    broken = tmp_path / "broken-artifacts"
    shutil.copytree(tiny_artifacts, broken)
    (broken / layout.TOKENIZER_DIR / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        build_repository([(N.ensemble, broken, options(max_batch_size=4))], repo)
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken-artifacts", "repo"]


@pytest.mark.parametrize(("size", "timeout_us"), [(64, 0), (0, 500000), (16, 250000)])
def test_every_step_bounds_its_queue(tiny_artifacts, size, timeout_us):
    """Load shedding inside Triton: past max_queue_size (or after queue_timeout_us) a step refuses at once."""
    manifest = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())
    configs = render_configs(manifest, options(max_queue_size=size, queue_timeout_us=timeout_us))
    for name in N.steps():
        policy = parse_config(configs[name]).dynamic_batching.default_queue_policy
        assert (policy.max_queue_size, policy.default_timeout_microseconds) == (size, timeout_us), name
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT and not policy.allow_timeout_override


def test_an_unbounded_queue_has_no_policy(tiny_artifacts):
    manifest = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())
    configs = render_configs(manifest, options(max_queue_size=0, queue_timeout_us=0))
    assert not parse_config(configs[N.tokenizer]).dynamic_batching.HasField("default_queue_policy")
