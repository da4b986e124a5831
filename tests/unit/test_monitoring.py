"""The monitoring: the generated files match their owner (tritonfleet.monitoring), the alert rules pass
`promtool test rules`, `tritonfleet status` prints the fleet's table from Prometheus's API, the alert receiver
records what it gets."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import jinja2
import pytest
import yaml

from tritonfleet import monitoring
from tritonfleet.cli import main
from tritonfleet.errors import MonitoringError

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
PROMTOOL_TESTS = Path(__file__).parent / "promtool"


def render_alerts(**overrides) -> str:
    """The role's alert rules as the role renders them, with its defaults (and `overrides`)."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string((ROLE / "templates" / "tritonfleet-alerts.yml.j2").read_text())
    return template.render(ansible_managed="Ansible managed", **(defaults | overrides))


# --- one owner ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(monitoring.generated_files()))
def test_generated_file_is_up_to_date(name):
    """roles/monitoring/files/ holds what `tritonfleet monitoring render` writes."""
    assert (ROLE / "files" / name).read_text() == monitoring.generated_files()[name], \
        f"roles/monitoring/files/{name} is out of date: run tritonfleet monitoring render"


def test_the_role_names_the_jobs_of_the_package():
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert role_vars["monitoring_jobs"] == monitoring.JOBS


def test_the_role_names_the_releases_metric_of_the_package():
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    assert role_vars["monitoring_releases_metric"] == monitoring.RELEASES_FILESYSTEM


def test_the_load_balancer_role_names_the_certificate_metric_of_the_package():
    role_vars = yaml.safe_load((ROLE.parent / "load_balancer" / "vars" / "main.yml").read_text())
    assert role_vars["load_balancer_certificate_metric"] == monitoring.TLS_CERTIFICATE_NOT_AFTER


def test_the_alerts_read_only_recorded_series():
    used = set(re.findall(r"tritonfleet:\w+", render_alerts()))
    assert used and used <= {s.record for s in monitoring.RECORDS}


def test_the_dashboard_queries_the_panels():
    dashboard = json.loads((ROLE / "files" / monitoring.GRAFANA_FILE).read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs == [s.expr for s in monitoring.PANELS]


def test_the_console_page_queries_the_panels():
    page = (ROLE / "files" / monitoring.CONSOLE_FILE).read_text()
    assert {s.expr for s in monitoring.PANELS} <= set(re.findall(r"query `([^`]+)`", page))


def test_the_counted_models_leave_out_the_ensemble_steps():
    pattern = re.search(r'model!~"([^"]+)"', monitoring.PUBLIC_MODELS).group(1)
    assert [bool(re.fullmatch(pattern, m)) for m in ["sentiment", "sentiment_tokenizer", "topic_classifier",
                                                     "topic_postprocess"]] == [False, True, True, True]


# --- promtool ---------------------------------------------------------------------------------------------------

promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                              reason="promtool is missing: install the Debian package prometheus (scripts/setup.sh)")


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "tritonfleet-records.yml").write_text(monitoring.recording_rules())
    (tmp_path / "tritonfleet-alerts.yml").write_text(render_alerts())
    shutil.copy(PROMTOOL_TESTS / "tritonfleet-alerts.test.yml", tmp_path)
    return tmp_path


@promtool
def test_the_rules_are_valid(rules_dir):
    check = subprocess.run(["promtool", "check", "rules", "tritonfleet-records.yml", "tritonfleet-alerts.yml"],
                           cwd=rules_dir, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@promtool
def test_the_alert_rules_pass_their_promtool_tests(rules_dir):
    test = subprocess.run(["promtool", "test", "rules", "tritonfleet-alerts.test.yml"], cwd=rules_dir,
                          capture_output=True, text=True)
    print(test.stdout)
    assert test.returncode == 0, test.stdout + test.stderr


# --- tritonfleet status ---------------------------------------------------------------------------------------


class FakePrometheus(http.server.ThreadingHTTPServer):
    """/api/v1/query answering from `answers` (query -> [(host, value)]); a query it does not know is empty."""

    def __init__(self, answers: dict[str, list[tuple[str, float]]]) -> None:
        answers_ = answers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                expr = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
                if expr == "broken(":
                    status, body = 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
                else:
                    result = [{"metric": {"host": h}, "value": [time.time(), str(v)]} for h, v in
                              answers_.get(expr, [])]
                    status, body = 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def prometheus():
    values = {"host_ready": [("tf-server-2", 0), ("tf-server-1", 1)],
              "host_requests_per_second": [("tf-server-1", 41.25), ("tf-convert-1", 3)],
              "host_failures_per_second": [("tf-server-1", 0.5)],
              "host_latency_p99_ms": [("tf-server-1", 812.0)],
              "host_cpu_utilization": [("tf-server-1", 0.75), ("tf-server-2", 0.1), ("tf-convert-1", 0.2)]}
    server = FakePrometheus({monitoring.series(key).expr: rows for key, rows in values.items()})
    yield server
    server.shutdown()


def test_status_has_a_row_per_triton_host(prometheus):
    table = monitoring.fleet_status(monitoring.Prometheus(prometheus.url))
    assert list(table) == ["tf-server-1", "tf-server-2"]


def test_status_takes_each_value_of_its_host(prometheus):
    table = monitoring.fleet_status(monitoring.Prometheus(prometheus.url))
    assert table["tf-server-1"] == {"host_ready": 1, "host_requests_per_second": 41.25,
                                    "host_failures_per_second": 0.5, "host_latency_p99_ms": 812.0,
                                    "host_cpu_utilization": 0.75}


def test_status_prints_the_table(prometheus, capsys):
    assert main(["status", "--prometheus", prometheus.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["HOST", "READY", "REQ/S", "FAIL/S", "QUEUE_MS", "P50_MS", "P99_MS", "BATCH", "CPU"]
    assert lines[1].split() == ["tf-server-1", "yes", "41.2", "0.50", "-", "-", "812.0", "-", "0.75"]
    assert lines[2].split() == ["tf-server-2", "NO", "-", "-", "-", "-", "-", "-", "0.10"]


def test_status_shows_the_gpu_where_there_is_one():
    expr = {s.key: s.expr for s in monitoring.PANELS}
    server = FakePrometheus({expr["host_ready"]: [("gpu-1", 1)], expr["host_gpu_utilization"]: [("gpu-1", 0.5)]})
    try:
        text = monitoring.format_status(monitoring.fleet_status(monitoring.Prometheus(server.url)))
    finally:
        server.shutdown()
    assert text.splitlines()[0].split()[-1] == "GPU" and text.splitlines()[1].split()[-1] == "0.50"


def test_a_refused_query_raises_with_prometheus_error(prometheus):
    with pytest.raises(MonitoringError, match="bad_data: parse error"):
        monitoring.Prometheus(prometheus.url).query("broken(")


def test_status_without_prometheus_exits_1_with_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["status", "--prometheus", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"status: cannot query Prometheus at http://127.0.0.1:{port}") and "\n" not in err


def test_monitoring_render_check_fails_on_a_stale_file(tmp_path, capsys):
    monitoring.render(tmp_path)
    (tmp_path / monitoring.CONSOLE_FILE).write_text("old")
    assert main(["monitoring", "render", "--check", "--output", str(tmp_path)]) == 2
    assert monitoring.CONSOLE_FILE in capsys.readouterr().err


# --- the alert receiver ---------------------------------------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "state" / "alerts.jsonl"
    proc = subprocess.Popen([sys.executable, str(ROLE / "files" / "alert-receiver.py"), "--port", str(port), "--log",
                             str(log)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # it listens
    yield f"http://127.0.0.1:{port}/", log
    proc.terminate()
    proc.wait(10)


def _open(request: urllib.request.Request | str):
    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10)


def test_the_receiver_records_each_notification_as_a_json_line(receiver):
    url, log = receiver
    for status in ("firing", "resolved"):
        body = json.dumps({"status": status, "alerts": [{"labels": {"alertname": "TritonServerDown"}}]}).encode()
        _open(urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["firing", "resolved"]


def test_the_receiver_stamps_the_arrival_time(receiver):
    url, log = receiver
    before = time.time()
    _open(urllib.request.Request(url, data=b'{"alerts": []}'))
    assert before <= json.loads(log.read_text())["received"] <= time.time()


def test_the_receiver_returns_what_it_recorded(receiver):
    url, _ = receiver
    _open(urllib.request.Request(url, data=b'{"status": "firing", "alerts": []}'))
    with _open(url) as response:
        assert json.loads(response.read().decode().splitlines()[0])["status"] == "firing"


def test_the_receiver_refuses_what_is_not_json(receiver):
    url, log = receiver
    with pytest.raises(urllib.error.HTTPError) as err:
        _open(urllib.request.Request(url, data=b"not json"))
    assert err.value.code == 400 and not log.exists()
