"""Facts about a host converged by the monitoring role: Prometheus and Alertmanager on the internal address, the node
exporter, the stand-in Triton server and load balancer scraped, a server that does not answer alerted through
Alertmanager to the webhook receiver (prepare.yml and converge.yml set them up)."""

import json
import time
import urllib.parse

import pytest

ALERTS = ["TritonServerDown", "TritonServerNotReady", "LoadBalancerBackendDown", "TritonFailureRatioHigh",
          "TritonQueueTimeHigh", "TritonLatencyP99High", "ReleasesDiskFilling"]


@pytest.fixture(scope="module")
def address(host):
    """The host's internal address (its default route's), where the role binds its services."""
    return host.check_output("ip -4 -o route get 192.0.2.1 | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'")


def get_json(host, url: str) -> dict:
    return json.loads(host.check_output(f"curl -sf '{url}'"))


def query(host, address: str, expr: str) -> list:
    url = f"http://{address}:9090/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    return get_json(host, url)["data"]["result"]


def eventually(check, seconds: float = 60, every: float = 2):
    """The value of check() once it is truthy, waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.mark.parametrize("package", ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"])
def test_package_is_installed(host, package):
    assert host.package(package).is_installed


@pytest.mark.parametrize("service", ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
                                     "tritonfleet-alert-receiver"])
def test_service_is_running(host, service):
    assert host.service(service).is_running


@pytest.mark.parametrize("service", ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
                                     "tritonfleet-alert-receiver"])
def test_service_is_enabled(host, service):
    assert host.service(service).is_enabled


@pytest.mark.parametrize("port", [9090, 9093, 9095, 9100])
def test_listens_on_the_internal_address(host, address, port):
    assert host.socket(f"tcp://{address}:{port}").is_listening


@pytest.mark.parametrize("port", [9090, 9093, 9095, 9100])
def test_does_not_listen_on_every_address(host, port):
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_alertmanager_has_no_cluster_port(host):
    assert not host.socket("tcp://0.0.0.0:9094").is_listening


def test_prometheus_config_is_valid(host):
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0


def test_rules_are_valid(host):
    assert host.run("promtool check rules /etc/prometheus/rules/tritonfleet-records.yml "
                    "/etc/prometheus/rules/tritonfleet-alerts.yml").rc == 0


def test_alertmanager_config_is_valid(host):
    assert host.run("amtool check-config /etc/prometheus/alertmanager.yml").rc == 0


def test_config_holds_no_password(host):
    assert "molecule-stats-password" not in host.file("/etc/prometheus/prometheus.yml").content_string


def test_stats_password_file_is_readable_by_prometheus_only(host):
    f = host.file("/etc/prometheus/haproxy-stats-password")
    assert (f.user, f.group, f.mode, f.content_string) == ("root", "prometheus", 0o640, "molecule-stats-password")


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_rule_is_loaded(host, address, alert):
    groups = get_json(host, f"http://{address}:9090/api/v1/rules")["data"]["groups"]
    assert alert in [rule["name"] for group in groups for rule in group["rules"]]


@pytest.mark.parametrize(("job", "target_host"), [("triton", "stand-in-1"), ("triton_health", "stand-in-1"),
                                                  ("haproxy", "stand-in-lb"), ("node", "this-host")])
def test_target_is_up(host, address, job, target_host):
    target_host = host.check_output("hostname") if job == "node" else target_host
    up = eventually(lambda: query(host, address, f'up{{job="{job}",host="{target_host}"}} == 1'))
    assert up


def test_a_server_that_does_not_answer_is_down(host, address):
    assert eventually(lambda: query(host, address, 'tritonfleet:triton_metrics_up{host="server-down"} == 0'))


def test_the_releases_disk_is_watched(host, address):
    hostname = host.check_output("hostname")
    assert eventually(lambda: query(host, address, f'tritonfleet:releases_disk_free_ratio{{host="{hostname}"}}'))


def test_the_console_page_shows_the_stand_in_server(host, address):
    eventually(lambda: query(host, address, 'tritonfleet:host_ready{host="stand-in-1"} == 1'))
    page = host.check_output(f"curl -sf http://{address}:9090/consoles/tritonfleet.html")
    assert '<tr class="ready"><td>stand-in-1</td>' in page


def test_the_down_alert_reaches_the_webhook_receiver(host, address):
    def received():
        lines = host.check_output(f"curl -sf http://{address}:9095/").splitlines()
        return [alert for line in lines for alert in json.loads(line)["alerts"]
                if alert["labels"]["alertname"] == "TritonServerDown" and alert["labels"]["host"] == "server-down"
                and alert["status"] == "firing"]

    assert eventually(received, seconds=90)


def test_the_console_page_shows_the_gpu_of_a_host_that_has_one(host, address):
    eventually(lambda: query(host, address, 'tritonfleet:host_gpu_utilization{host="stand-in-1"}'))
    page = host.check_output(f"curl -sf http://{address}:9090/consoles/tritonfleet.html")
    assert "<th>GPU</th>" in page and "<td>0.50</td>" in page
