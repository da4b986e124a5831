"""A real tritonserver (the nvidia-pytriton wheel's binary) serving the embedded demo model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonfleet import paths
from tritonfleet.convert import ConvertOptions, convert
from tritonfleet.demo_model import build_demo_model
from tritonfleet.repo import RepoOptions, build_repository
from tritonfleet.serve import TritonServer, free_ports

MAX_BATCH = 16
SUB_BATCH = 3



@pytest.fixture(scope="session")
def demo_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_demo_model(paths.DEMO_MODEL_DIR)  # cached after the first build
    out = tmp_path_factory.mktemp("demo") / "artifacts"
    convert(ConvertOptions(model=str(paths.DEMO_MODEL_DIR), output=out, formats=("onnx", "int8")))
    return out


@pytest.fixture(scope="session")
def server(demo_artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("demo") / "model_repository"
    # A queue delay long enough that concurrent requests really meet in the dynamic batcher, and the runner
    # sorting each batch by length and running it SUB_BATCH rows at a time (an odd size: partial chunks too).
    build_repository(demo_artifacts, repo, RepoOptions(max_batch_size=MAX_BATCH, max_queue_delay_us=20000,
                                                       sub_batch_size=SUB_BATCH))
    http, grpc, metrics = free_ports(3)
    srv = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                       log_file=tmp_path_factory.mktemp("logs") / "tritonserver.log")
    with srv:
        yield srv


@pytest.fixture(scope="module")
def int8_server(demo_artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo model's int8 export in the python runner: what a CPU host serves when int8 passes its gate."""
    repo = tmp_path_factory.mktemp("demo-int8") / "model_repository"
    # build-repo serves int8 one row per run; a long queue delay makes concurrent requests share executions.
    build_repository(demo_artifacts, repo, RepoOptions(runner_format="int8", max_batch_size=MAX_BATCH,
                                                       max_queue_delay_us=20000))
    http, grpc, metrics = free_ports(3)
    srv = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
                       log_file=tmp_path_factory.mktemp("logs") / "tritonserver-int8.log")
    with srv:
        yield srv
