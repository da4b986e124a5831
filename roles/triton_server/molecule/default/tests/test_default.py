"""Facts about a host converged by the triton_server role (CPU image, one echo model)."""

import json

import pytest

CONTAINER = "tritonserver"
ROOT = "/opt/tritonfleet/model_repository"


def inspect(host):
    return json.loads(host.check_output(f"docker inspect {CONTAINER}"))[0]


def test_container_is_running(host):
    assert inspect(host)["State"]["Running"]


def test_container_runs_as_non_root(host):
    assert inspect(host)["Config"]["User"] == "1000:1000"


def test_server_process_is_not_root(host):
    assert host.check_output("ps -C tritonserver -o uid=").split() == ["1000"]


def test_repository_is_mounted_read_only(host):
    mounts = {m["Destination"]: m for m in inspect(host)["Mounts"]}
    assert mounts["/models"]["RW"] is False


@pytest.mark.parametrize(("key", "value"), [("Name", "unless-stopped")])
def test_restart_policy(host, key, value):
    assert inspect(host)["HostConfig"]["RestartPolicy"][key] == value


@pytest.mark.parametrize("port", [8000, 8001])
def test_port_is_listening(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_metrics_port_is_not_published_on_every_address(host):
    assert not host.socket("tcp://0.0.0.0:8002").is_listening


def test_metrics_port_is_published_on_the_internal_address(host):
    address = inspect(host)["HostConfig"]["PortBindings"]["8002/tcp"][0]["HostIp"]
    assert address not in ("", "0.0.0.0")
    assert host.socket(f"tcp://{address}:8002").is_listening


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/logging"), ("POST", "/v2/repository/index")])
def test_admin_api_without_the_key_is_refused(host, method, path):
    assert _status(host, method, path) == "403"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/logging"), ("POST", "/v2/repository/index")])
def test_admin_api_with_the_key_is_allowed(host, method, path):
    assert _status(host, method, path, f"-H '{_admin_header(host)}'") == "200"


def _admin_header(host):
    """'<header>: <key>' from the server's own --http-restricted-api=<apis>:<header>=<key>."""
    arg = next(a for a in inspect(host)["Args"] if a.startswith("--http-restricted-api="))
    header, key = arg.split(":", 1)[1].split("=", 1)
    return f"{header}: {key}"


def _status(host, method, path, extra=""):
    data = "-d '{}'" if method == "POST" else ""
    return host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} {data} {extra} http://127.0.0.1:8000{path}")


@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/health/live", "/v2/models/echo/ready"])
def test_endpoint_answers_200(host, path):
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:8000{path}") == "200"


def test_the_release_of_the_label_is_the_folder_mounted(host):
    label = inspect(host)["Config"]["Labels"]["org.tritonfleet.release-id"]
    mounts = {m["Destination"]: m for m in inspect(host)["Mounts"]}
    assert mounts["/models"]["Source"] == f"{ROOT}/releases/{label}"


@pytest.mark.parametrize("arg", ["--model-repository=/models", "--model-control-mode=none"])
def test_server_argument(host, arg):
    assert arg in inspect(host)["Args"]
