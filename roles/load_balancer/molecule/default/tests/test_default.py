"""Facts about a host converged by the load_balancer role (two stand-in servers on 18000 and 28000)."""

import pytest

CONFIG = "/etc/haproxy/haproxy.cfg"


def test_haproxy_is_installed(host):
    assert host.package("haproxy").is_installed


def test_haproxy_is_running(host):
    assert host.service("haproxy").is_running


def test_haproxy_is_enabled(host):
    assert host.service("haproxy").is_enabled


def test_config_is_valid(host):
    assert host.run(f"haproxy -c -f {CONFIG}").rc == 0


@pytest.mark.parametrize("port", [8000, 8001, 8404])
def test_port_is_listening(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


@pytest.mark.parametrize(
    "line",
    [
        "bind *:8001 proto h2",
        "option httpchk GET /v2/health/ready",
        "server server-1 127.0.0.1:18001 proto h2 check port 18000 check-proto h1",
        "server server-2 127.0.0.1:28000 check",
    ],
)
def test_config_has_line(host, line):
    assert line in [raw.strip() for raw in host.file(CONFIG).content_string.splitlines()]


def test_http_is_proxied_to_a_healthy_server(host):
    code = host.check_output("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v2/health/ready")
    assert code == "200"


@pytest.mark.parametrize("server", ["triton_http/server-1", "triton_http/server-2"])
def test_server_is_up_in_the_stats(host, server):
    backend, name = server.split("/")
    csv = host.check_output("curl -s 'http://127.0.0.1:8404/stats;csv'")
    rows = [row.split(",") for row in csv.splitlines()]
    assert any(row[0] == backend and row[1] == name and row[17] == "UP" for row in rows if len(row) > 17)
