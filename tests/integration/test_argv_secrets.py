"""The admin key off tritonserver's command line (roles/triton_server/files/tritonfleet-argv-secrets.c), against the
real tritonserver: the role's shim, built here as the role builds it on each host, loaded with LD_PRELOAD.

tritonserver takes the key of its restricted APIs only as an argument; the role passes `${file:PATH}` instead and
the shim puts the file's content in its place before main(). The key must work, and appear nowhere in the process's
command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonfleet.serve import TritonServer, find_tritonserver, free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "roles" / "triton_server" / "files" / "tritonfleet-argv-secrets.c"
HEADER = "tritonfleet-admin-key"
KEY = "integration-admin-key-0123456789"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("argv-secrets")


@pytest.fixture(scope="module")
def shim(work: Path) -> Path:
    """The shim, compiled as the role compiles it (cc -O2 -fPIC -shared)."""
    out = work / "tritonfleet-argv-secrets.so"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-o", str(out), str(SHIM)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def key_file(work: Path) -> Path:
    path = work / "admin-key"
    path.write_text(KEY + "\n")
    path.chmod(0o400)
    return path


def restriction(key_file: Path) -> str:
    return f"model-repository,statistics:{HEADER}=${{file:{key_file}}}"


@pytest.fixture(scope="module")
def server(shim: Path, key_file: Path, work: Path):
    """tritonserver with an empty repository, its restricted APIs keyed by a reference to key_file."""
    (work / "repo").mkdir()
    http, grpc_port, metrics = free_ports(3)
    srv = TritonServer(work / "repo", http_port=http, grpc_port=grpc_port, metrics_port=metrics,
                       log_file=work / "tritonserver.log",
                       extra_args=[f"--http-restricted-api={restriction(key_file)}",
                                   f"--grpc-restricted-protocol={restriction(key_file)}"])
    before = os.environ.get("LD_PRELOAD")
    os.environ["LD_PRELOAD"] = str(shim)
    try:
        srv.start(ready_timeout=120)
    finally:
        if before is None:
            del os.environ["LD_PRELOAD"]
        else:
            os.environ["LD_PRELOAD"] = before
    yield srv
    srv.stop()


def repository_index(server: TritonServer, key: str | None) -> int:
    headers = {HEADER: key} if key is not None else {}
    return requests.post(f"http://{server.http_url}/v2/repository/index", headers=headers, json={},
                         timeout=10).status_code


def grpc_repository_index(server: TritonServer, key: str | None) -> grpc.StatusCode:
    metadata = ((f"triton-grpc-protocol-{HEADER}", key),) if key is not None else ()
    with grpc.insecure_channel(server.grpc_url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
                service_pb2.RepositoryIndexRequest(), metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_the_command_line_of_the_server_shows_the_reference_not_the_key(server, key_file):
    assert server.proc is not None
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode()
    assert KEY not in cmdline
    assert cmdline.count(f"=${{file:{key_file}}}") == 2, cmdline


def test_ps_does_not_show_the_key(server):
    listing = subprocess.run(["ps", "-eww", "-o", "args"], check=True, capture_output=True, text=True).stdout
    assert "--http-restricted-api=" in listing and KEY not in listing


@pytest.mark.parametrize(("key", "status"), [(KEY, 200), (None, 403), ("wrong-key-0123456789", 403)])
def test_a_restricted_http_api_takes_the_key_of_the_file_only(server, key, status):
    assert repository_index(server, key) == status


def test_the_reference_itself_is_not_the_key(server, key_file):
    assert repository_index(server, f"${{file:{key_file}}}") == 403
    assert grpc_repository_index(server, f"${{file:{key_file}}}") != grpc.StatusCode.OK


@pytest.mark.parametrize(("key", "code"), [(KEY, grpc.StatusCode.OK), (None, grpc.StatusCode.UNAVAILABLE)])
def test_a_restricted_grpc_method_takes_the_key_of_the_file_only(server, key, code):
    assert grpc_repository_index(server, key) == code


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_a_server_whose_key_file_is_missing_or_empty_does_not_start(shim, work, content):
    """Never a server whose key is the reference itself: it stops before main() with status 78 (EX_CONFIG)."""
    path = work / f"key-{'missing' if content is None else len(content)}"
    if content is not None:
        path.write_text(content)
    install = find_tritonserver()
    command = [str(install.binary), f"--model-repository={work}", f"--http-restricted-api={restriction(path)}"]
    done = subprocess.run(command, env={**os.environ, **install.env, "LD_PRELOAD": str(shim)}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 78, done.stderr[-2000:]
    assert "tritonfleet-argv-secrets: " in done.stderr and str(path) in done.stderr


def test_a_wrapper_that_execs_tritonserver_passes_the_reference_on(shim, key_file):
    """The shim acts only in tritonserver: a wrapper (the swarm entrypoint, in Python) sees the reference."""
    done = subprocess.run([sys.executable, "-c", "import sys; print(sys.argv[1])", f"${{file:{key_file}}}"],
                          env={**os.environ, "LD_PRELOAD": str(shim)}, check=True, capture_output=True, text=True)
    assert done.stdout.strip() == f"${{file:{key_file}}}"
