"""A real tritonserver (the nvidia-pytriton wheel's binary) serving a release of both embedded demo models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonfleet import layout, paths
from tritonfleet.demo import TASKS, build_demo_model
from tritonfleet.release import ModelOptions, ModelSpec, Release, artifacts_for
from tritonfleet.repo import build_repository
from tritonfleet.serve import TritonServer, free_ports

MAX_BATCH = 16
SUB_BATCH = 3
#: The second model of the release: another classifier, other labels, served by the same server.
TOPIC = "topic"


def demo_spec(task: str, formats: tuple[str, ...]) -> ModelSpec:
    build_demo_model(task, paths.DEMO_MODELS_DIR / task)  # cached after the first build
    return ModelSpec(name=task, model=str(paths.DEMO_MODELS_DIR / task), options=ModelOptions(formats=formats))


@pytest.fixture(scope="session")
def conversions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conversions")


@pytest.fixture(scope="session")
def demo_artifacts(conversions: Path) -> Path:
    """The sentiment demo model converted to ONNX and int8 (its golden file has its own check sentences)."""
    return artifacts_for(demo_spec(layout.DEFAULT_MODEL_NAME, ("onnx", "int8")), conversions)


@pytest.fixture(scope="session")
def topic_artifacts(conversions: Path) -> Path:
    return artifacts_for(demo_spec(TOPIC, ("onnx",)), conversions)


@pytest.fixture(scope="session")
def release(demo_artifacts: Path, topic_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Both demo models in one repository. A queue delay long enough that concurrent requests really meet in the
    dynamic batcher, and the runner sorting each batch by length and running it SUB_BATCH rows at a time (an odd
    size: partial chunks too)."""
    opts = ModelOptions(max_batch_size=MAX_BATCH, max_queue_delay_us=20000, sub_batch_size=SUB_BATCH)
    return build_repository([(layout.DEFAULT_MODEL_NAME, demo_artifacts, opts), (TOPIC, topic_artifacts, opts)],
                            tmp_path_factory.mktemp("demo") / "model_repository")


@pytest.fixture(scope="session")
def server(release: Release, tmp_path_factory: pytest.TempPathFactory):
    http, grpc, metrics = free_ports(3)
    srv = TritonServer(release.path, http_port=http, grpc_port=grpc, metrics_port=metrics,
                       log_file=tmp_path_factory.mktemp("logs") / "tritonserver.log")
    with srv:
        yield srv


@pytest.fixture(scope="module")
def int8_server(demo_artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo model's int8 export in the python runner: what a CPU host serves when int8 passes its gate."""
    repo = tmp_path_factory.mktemp("demo-int8") / "model_repository"
    # build-repo serves int8 one row per run; a long queue delay makes concurrent requests share executions.
    opts = ModelOptions(format="int8", max_batch_size=MAX_BATCH, max_queue_delay_us=20000)
    build_repository([(layout.DEFAULT_MODEL_NAME, demo_artifacts, opts)], repo)
    http, grpc, metrics = free_ports(3)
    srv = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                       log_file=tmp_path_factory.mktemp("logs") / "tritonserver-int8.log")
    with srv:
        yield srv


__all__ = ["MAX_BATCH", "SUB_BATCH", "TASKS", "TOPIC"]
