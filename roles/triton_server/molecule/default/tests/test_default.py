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


KEY_FILE = "/etc/tritonfleet/triton-admin-key"
REFERENCE = "${file:/run/secrets/tritonfleet-admin-key}"


def internal_address(host) -> str:
    """The address the ports are published on: the host's internal one, never every address."""
    address = inspect(host)["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostIp"]
    assert address not in ("", "0.0.0.0")
    return address


@pytest.mark.parametrize("port", [8000, 8001, 8002])
def test_port_is_listening_on_the_internal_address(host, port):
    assert host.socket(f"tcp://{internal_address(host)}:{port}").is_listening


@pytest.mark.parametrize("port", [8000, 8001, 8002])
def test_port_is_not_published_on_every_address(host, port):
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def admin_key(host) -> str:
    return host.file(KEY_FILE).content_string.strip()


def test_the_admin_key_file_is_the_server_users_only(host):
    key_file = host.file(KEY_FILE)
    assert (key_file.uid, key_file.mode) == (1000, 0o400)
    assert admin_key(host) == "molecule-admin-key-0123456789"


@pytest.mark.parametrize("restriction", ["--http-restricted-api=", "--grpc-restricted-protocol="])
def test_the_command_line_names_the_key_file_not_the_key(host, restriction):
    arg = next(a for a in inspect(host)["Args"] if a.startswith(restriction))
    assert arg.endswith(f":tritonfleet-admin-key={REFERENCE}") and admin_key(host) not in arg


def test_no_process_listing_shows_the_admin_key(host):
    listing = host.check_output("ps -eww -o args")
    assert REFERENCE in listing and admin_key(host) not in listing


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/logging"), ("POST", "/v2/repository/index")])
def test_admin_api_without_the_key_is_refused(host, method, path):
    assert _status(host, method, path) == "403"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/logging"), ("POST", "/v2/repository/index")])
def test_admin_api_with_the_key_is_allowed(host, method, path):
    assert _status(host, method, path, f"-H 'tritonfleet-admin-key: {admin_key(host)}'") == "200"


def test_the_reference_itself_is_not_the_key(host):
    assert _status(host, "POST", "/v2/repository/index", f"-H 'tritonfleet-admin-key: {REFERENCE}'") == "403"


def _status(host, method, path, extra=""):
    data = "-d '{}'" if method == "POST" else ""
    return host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} {data} {extra} "
                             f"http://{internal_address(host)}:8000{path}")


@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/health/live", "/v2/models/echo/ready"])
def test_endpoint_answers_200(host, path):
    assert host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' http://{internal_address(host)}:8000{path}") == "200"


def test_the_release_of_the_label_is_the_folder_mounted(host):
    label = inspect(host)["Config"]["Labels"]["org.tritonfleet.release-id"]
    mounts = {m["Destination"]: m for m in inspect(host)["Mounts"]}
    assert mounts["/models"]["Source"] == f"{ROOT}/releases/{label}"


@pytest.mark.parametrize("arg", ["--model-repository=/models", "--model-control-mode=none"])
def test_server_argument(host, arg):
    assert arg in inspect(host)["Args"]
