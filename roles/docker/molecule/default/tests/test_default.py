"""Facts about a host converged by the docker role (molecule/default/converge.yml)."""

import json

import pytest

DAEMON_JSON = "/etc/docker/daemon.json"


def daemon_config(host):
    return json.loads(host.file(DAEMON_JSON).content_string)


@pytest.mark.parametrize("package", ["docker.io", "python3-requests"])
def test_package_is_installed(host, package):
    assert host.package(package).is_installed


@pytest.mark.parametrize("service", ["docker", "containerd"])
def test_service_is_enabled(host, service):
    assert host.service(service).is_enabled


@pytest.mark.parametrize("service", ["docker", "containerd"])
def test_service_is_running(host, service):
    assert host.service(service).is_running


def test_socket_exists(host):
    assert host.file("/run/docker.sock").is_socket


def test_daemon_json_is_root_owned(host):
    assert host.file(DAEMON_JSON).user == "root"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("log-driver", "json-file"),
        ("log-opts", {"max-size": "10m", "max-file": "3"}),
        ("insecure-registries", ["172.30.0.1:5000"]),
        ("default-ulimits", {"stack": {"Name": "stack", "Soft": 67108864, "Hard": 67108864}}),
    ],
)
def test_daemon_json_has_role_option(host, key, value):
    assert daemon_config(host)[key] == value


def test_daemon_json_keeps_the_nvidia_runtime(host):
    assert daemon_config(host)["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.LoggingDriver}}", "json-file"),
        ("{{range .RegistryConfig.IndexConfigs}}{{if not .Secure}}{{.Name}} {{end}}{{end}}", "172.30.0.1:5000"),
        ("{{range $name, $runtime := .Runtimes}}{{$name}} {{end}}", "nvidia"),
    ],
)
def test_engine_applies_daemon_json(host, template, expected):
    out = host.check_output("docker info --format %s", template)
    assert expected in out.split()


def test_engine_runs_a_container_with_the_default_ulimits(host):
    # No registry is reachable: import a one-binary image (dash) from the host's own files.
    host.check_output(
        "tar -C / -ch bin/sh bin/dash lib/x86_64-linux-gnu/libc.so.6 lib64/ld-linux-x86-64.so.2"
        " | docker import - molecule/sh:1"
    )
    assert host.check_output("docker run --rm molecule/sh:1 /bin/sh -c 'ulimit -s'") == str(67108864 // 1024)


@pytest.mark.parametrize(
    ("template", "expected"),
    [("{{.Swarm.LocalNodeState}}", "active"), ("{{.Swarm.ControlAvailable}}", "true"), ("{{.Swarm.Managers}}", "1")],
)
def test_the_node_manages_a_swarm(host, template, expected):
    assert host.check_output("docker info --format %s", template) == expected


def test_the_node_has_its_labels(host):
    labels = json.loads(host.check_output("docker node inspect self --format '{{json .Spec.Labels}}'"))
    assert labels == {"tritonfleet.test": "yes"}
