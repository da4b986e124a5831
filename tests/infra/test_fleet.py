"""The deployed local fleet, host by host (one fact per test)."""

from __future__ import annotations

import urllib.request

import pytest

REPO_ROOT = "/opt/tritonfleet/model_repository"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


@pytest.mark.parametrize("service", ["docker"])
def test_service_is_running(host, service):
    assert host.service(service).is_running


@pytest.mark.parametrize("service", ["docker"])
def test_service_is_enabled(host, service):
    assert host.service(service).is_enabled


def test_triton_container_is_running(triton):
    assert triton["State"]["Running"] is True


def test_triton_container_user_is_not_root(triton):
    user = triton["Config"]["User"].split(":")[0]
    assert user not in ("", "0", "root")


def test_triton_process_runs_as_non_root(host):
    uids = host.check_output("ps -C tritonserver -o uid=").split()
    assert uids and "0" not in uids


def test_repository_mount_is_read_only(triton):
    mounts = {m["Destination"]: m["RW"] for m in triton["Mounts"]}
    assert mounts.get("/models") is False


@pytest.mark.parametrize("name", ["http", "grpc", "metrics"])
def test_a_triton_port_is_listening_on_the_internal_address(host, name):
    assert host.socket(f"tcp://{internal_address(host)}:{PORTS[name]}").is_listening, name


@pytest.mark.parametrize("name", ["http", "grpc", "metrics"])
def test_a_triton_port_is_not_published_on_every_interface(host, name):
    assert not host.socket(f"tcp://0.0.0.0:{PORTS[name]}").is_listening, name


def internal_address(host) -> str:
    """The address of the default route (what Ansible's default_ipv4 is), not docker0's."""
    return host.check_output("ip -4 route get 1.1.1.1 | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'")


def test_current_release_is_a_symlink(host):
    assert host.file(f"{REPO_ROOT}/current").is_symlink


def test_current_release_is_the_recorded_one(host, release):
    assert host.file(f"{REPO_ROOT}/current").linked_to == f"{REPO_ROOT}/releases/{release.id}"


def test_sha256sum_verifies_the_served_release(host):
    assert host.run(f"cd {REPO_ROOT}/current && sha256sum --check --strict --quiet SHA256SUMS").rc == 0


def test_served_sha256sums_is_the_recorded_releases(host, release):
    assert host.file(f"{REPO_ROOT}/current/SHA256SUMS").sha256sum == release.id


def test_container_label_names_the_recorded_release(triton, release):
    assert triton["Config"]["Labels"]["org.tritonfleet.release-id"] == release.id


@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/health/live"])
def test_endpoint_returns_200_on_the_host(host, path):
    code = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://{internal_address(host)}:8000{path}")
    assert code == "200"


def test_every_triton_model_of_the_release_is_ready(host, release):
    names = [n for m in release.models for n in m.names.served(m.options.get("preprocessing", "python"))]
    address = internal_address(host)
    codes = {n: host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://{address}:8000/v2/models/{n}/ready")
             for n in names}
    assert codes == dict.fromkeys(names, "200")


def test_health_ready_returns_200_from_the_controller(host):
    address = internal_address(host)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}:{PORTS['http']}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
