"""The fleet's monitoring, against the local fleet deployed with site.yml (monitoring.yml included): every query of
the Grafana dashboard and of the console page answers with data while load runs, a burst of failing requests fires
the failure-ratio alert, monitoring.yml changes nothing the second time, and a killed server host reaches the
webhook receiver within 60 s and is resolved once it is back (both latencies are printed); the same kill, under a
load through the load balancer, loses no request.

Order matters (pytest runs the file top to bottom): the host is killed last, once for both of those facts, and
brought back (scripts/fleet.sh create, its Docker engine, deploy.yml).
"""

from __future__ import annotations

import calendar
import functools
import http.client
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest
from fleetlib import (
    LOG_DIR,
    ROOT,
    SERVERS,
    VENV_BIN,
    Load,
    ansible_playbook,
    balancer_limits,
    host_address,
    host_var,
    inventory_group,
    load_texts,
    playbook_env,
    start_host,
    wait_for_engine,
)

from tritonfleet import layout, monitoring
from tritonfleet.release import deployed

RECORD = ROOT / "build" / "deployed" / "local.json"
ROLE_FILES = ROOT / "roles" / "monitoring" / "files"
MONITOR = inventory_group("monitoring_hosts")[0]
GPU_HOSTS = inventory_group("gpu_hosts")
#: The alert deadline of the issue: a dead server reaches the webhook within this.
ALERT_DEADLINE_S = 60
#: How long the load of the query tests runs: their 30 s wait, the queries, the table and the screenshot.
LOAD_S = 150


@functools.cache
def inventory_var(host: str, name: str):
    """A port of the local inventory (read once: ansible-inventory is slow and the tests poll)."""
    return host_var(host, name)


def prometheus_url() -> str:
    return f"http://{host_address(MONITOR)}:{inventory_var(MONITOR, 'monitoring_prometheus_port')}"


def receiver_url() -> str:
    return f"http://{host_address(MONITOR)}:{inventory_var(MONITOR, 'monitoring_webhook_receiver_port')}/"


def notifications() -> list[dict]:
    """What the webhook receiver recorded: one notification of Alertmanager per line, with `received`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(receiver_url(), timeout=10) as response:
        return [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]


def first_alert(name: str, host: str, status: str, since: float) -> dict | None:
    """The first notification received after `since` that carries alert `name` of `host` in `status`."""
    for note in notifications():
        if note["received"] < since:
            continue
        for alert in note["alerts"]:
            if (alert["labels"].get("alertname"), alert["labels"].get("host"), alert["status"]) == (name, host, status):
                return note
    return None


def wait_for(check, seconds: float, every: float = 1.0):
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def http_port(host: str) -> int:
    return int(inventory_var(host, "triton_server_http_port"))


def ready(host: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://{host_address(host)}:{http_port(host)}/v2/health/ready",
                timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


# --- every query of the dashboard and of the page, under load ----------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((ROLE_FILES / monitoring.GRAFANA_FILE).read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def console_exprs() -> list[str]:
    """Every `query` of the console page the role installed (raw strings between backquotes)."""
    return list(dict.fromkeys(re.findall(r"query `([^`]+)`", (ROLE_FILES / monitoring.CONSOLE_FILE).read_text())))


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory):
    return load_texts(tmp_path_factory.mktemp("load"))


@pytest.fixture(scope="module")
def under_load(texts):
    """Load through the load balancer, long enough for every rate() to have two scrapes and the summaries data.
    It ends by itself after LOAD_S (pytest keeps a module's fixture until the module ends)."""
    load = Load(20, LOAD_S, texts)
    time.sleep(30)
    yield monitoring.Prometheus(prometheus_url())
    result = load.stop()
    assert result["sent_total"] > 0


@pytest.mark.parametrize("expr", [pytest.param(e, id=f"grafana-{i}") for i, e in enumerate(dashboard_exprs())]
                         + [pytest.param(e, id=f"console-{i}") for i, e in enumerate(console_exprs())])
def test_every_query_of_the_dashboard_and_the_page_answers_with_data(under_load, expr):
    result = under_load.query(expr)  # a query Prometheus refuses raises MonitoringError
    if monitoring.TRITON_GPU_UTILIZATION in expr and not GPU_HOSTS:
        pytest.skip("no GPU in this fleet (gpu_hosts is empty): the GPU query answers nothing, as it should")
    assert result, f"no data for {expr}"


def test_status_shows_every_server_ready_and_serving(under_load):
    run = subprocess.run([str(VENV_BIN / "tritonfleet"), "status", "--prometheus", prometheus_url(), "--json"],
                         capture_output=True, text=True, env=playbook_env())
    assert run.returncode == 0, run.stderr
    table = json.loads(run.stdout)
    print(subprocess.run([str(VENV_BIN / "tritonfleet"), "status", "--prometheus", prometheus_url()],
                         capture_output=True, text=True, env=playbook_env()).stdout)
    assert {host: (row["host_ready"], row.get("host_requests_per_second", 0) > 0) for host, row in table.items()} \
        == dict.fromkeys(SERVERS, (1, True))


def test_the_console_page_under_load(under_load):
    """The page renders a row per server; with Chromium installed, a screenshot of it under load is kept in
    build/test-deploy/console-under-load.png (the path is printed)."""
    url = f"{prometheus_url()}/consoles/tritonfleet.html"
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as response:
        page = response.read().decode()
    assert all(f"<td>{host}</td>" in page for host in SERVERS)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: no screenshot (apt-get install chromium)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    shot = LOG_DIR / "console-under-load.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
                    f"--screenshot={shot}", "--window-size=1400,500", url], check=True, capture_output=True,
                   timeout=120)
    print(f"screenshot of {url} under load: {shot}")
    assert shot.stat().st_size > 0


# --- a burst of failing requests ---------------------------------------------------------------------------------


def send_blank_texts(host: str, model: str, seconds: float) -> dict[int, int]:
    """Requests whose text is blank, straight to one server's HTTP port: the tokenizer refuses each with
    INVALID_ARG, and Triton counts a failed request of the ensemble. Returns the HTTP statuses seen."""
    body = json.dumps({"inputs": [{"name": layout.TEXT, "shape": [1, 1], "datatype": "BYTES", "data": [" "]}]})
    statuses: dict[int, int] = {}
    conn = http.client.HTTPConnection(host_address(host), http_port(host), timeout=30)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        time.sleep(0.02)
    conn.close()
    return statuses


def firing_in_prometheus(name: str, host: str) -> list:
    return monitoring.Prometheus(prometheus_url()).query(
        f'ALERTS{{alertname="{name}", host="{host}", alertstate="firing"}}')


def test_prometheus_knows_when_the_load_balancers_certificate_expires():
    """The load balancer exports its certificate's notAfter (node exporter textfile); the recorded series counts
    down to it. Compared with the certificate itself, read here with openssl."""
    balancer = inventory_group("load_balancers")[0]
    certificate = ROOT / "build" / "pki" / f"{balancer}.crt"
    end = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(certificate)], check=True,
                         capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    not_after = calendar.timegm(time.strptime(end, "%b %d %H:%M:%S %Y %Z"))
    series = wait_for(lambda: monitoring.Prometheus(prometheus_url()).query(
        f'tritonfleet:tls_certificate_expiry_seconds{{host="{balancer}"}}'), 60)
    assert [entry["metric"]["path"] for entry in series] == ["/etc/haproxy/tls/tritonfleet.pem"]
    assert abs(float(series[0]["value"][1]) - (not_after - time.time())) < 120


def test_a_burst_of_failing_requests_fires_the_failure_ratio_alert():
    host = SERVERS[0]
    model = deployed(RECORD).names()[0]
    # An earlier burst (the fuzz test) must have been resolved first: Alertmanager does not notify again an alert
    # that is still firing.
    assert wait_for(lambda: not firing_in_prometheus("TritonFailureRatioHigh", host), 180, every=5)
    start = time.time()
    statuses = send_blank_texts(host, model, 60)
    print(f"blank texts to {model} on {host}: HTTP statuses {statuses}")
    assert set(statuses) == {400}, statuses
    note = wait_for(lambda: first_alert("TritonFailureRatioHigh", host, "firing", start), 90, every=2)
    assert note, f"TritonFailureRatioHigh of {host} did not reach the webhook within 150 s of the burst's start"
    print(f"TritonFailureRatioHigh of {host} reached the webhook {note['received'] - start:.0f} s after the burst "
          "began")


# --- idempotence and check mode ---------------------------------------------------------------------------------


def test_a_second_monitoring_run_changes_nothing():
    run = ansible_playbook("monitoring.yml", log_name="monitoring-second-run")
    assert run.returncode == 0, run.output[-3000:]
    changed = {host: counts["changed"] for host, counts in run.recap.items() if counts["changed"]}
    assert changed == {}, f"a second monitoring.yml run changed something: {changed}"


def test_check_diff_of_monitoring_reports_no_change():
    run = ansible_playbook("monitoring.yml", "--check", "--diff", log_name="monitoring-check-diff")
    assert run.returncode == 0, run.output[-3000:]
    changed = {host: counts["changed"] for host, counts in run.recap.items() if counts["changed"]}
    assert changed == {}, f"--check --diff reports changes: {changed}"


def test_a_new_webhook_url_is_never_printed_not_even_with_diff_or_verbose():
    """The webhook's URL often carries a token: a run that would change it shows the change, never the URL."""
    secret = "https://alerts.example.internal/hook?token=tf-secret-0123456789"
    run = ansible_playbook("monitoring.yml", "--check", "--diff", "-v", "-e",
                           f"monitoring_alertmanager_webhook_url={secret}", log_name="monitoring-secret-webhook")
    assert run.returncode == 0, run.output[-3000:]
    assert re.search(r"TASK \[monitoring : Write the Alertmanager configuration\][^\n]*\nchanged: ", run.output), \
        run.output[-3000:]
    assert "tf-secret-0123456789" not in run.output


# --- a server host killed under load ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_killed(texts) -> dict:
    """The last server's host container is killed in the middle of a load through the load balancer, once, for two
    facts: no request is lost, and TritonServerDown reaches the webhook within ALERT_DEADLINE_S and is resolved once
    the host serves again. More users than one server takes in flight: the live server is full, so the retries would
    go back to the dead one's free slots unless its first failed connection takes it out (load_balancer_error_limit).
    Afterwards the host is brought back (scripts/fleet.sh create, its Docker engine, deploy.yml) and noted when it
    serves again (its Triton restarts with its Docker engine, or with the deploy)."""
    dying = SERVERS[-1]
    address = host_address(dying)
    assert wait_for(lambda: not firing_in_prometheus("TritonServerDown", dying), 120, every=5)
    maxconn, _, _ = balancer_limits()
    load = Load(3 * maxconn, 40, texts)
    time.sleep(12)
    killed = time.time()
    subprocess.run(["docker", "kill", dying], check=True, capture_output=True)
    firing = None
    back: dict[str, float] = {}
    try:
        firing = wait_for(lambda: first_alert("TritonServerDown", dying, "firing", killed), ALERT_DEADLINE_S + 30)
        if firing:
            print(f"TritonServerDown of {dying}: at the webhook {firing['received'] - killed:.1f} s after the kill")
        result = load.result()
    finally:
        start_host()  # before the watcher: the host's address exists again
        watcher = threading.Thread(target=lambda: back.setdefault("ready", wait_for(lambda: ready(dying) and
                                                                                     time.time(), 900)), daemon=True)
        watcher.start()
        wait_for_engine(dying)
        run = ansible_playbook("deploy.yml", log_name="deploy-after-monitored-host-killed")
        assert run.returncode == 0, run.output[-3000:]
        if host_address(dying) != address:  # a new address on the fleet network: the scrape targets follow it
            print(f"{dying} came back at {host_address(dying)} (was {address}): monitoring.yml again")
            run = ansible_playbook("monitoring.yml", log_name="monitoring-after-host-killed")
            assert run.returncode == 0, run.output[-3000:]
            back["ready"] = time.time()
        watcher.join(60)
    assert all(ready(host) for host in SERVERS)
    return {"host": dying, "killed": killed, "load": result, "firing": firing, "back": back.get("ready")}


def test_a_server_host_killed_under_load_loses_no_request(host_killed):
    """Its requests in flight fail on it and the load balancer retries them on the other server."""
    result = host_killed["load"]
    print(f"host killed under load: sent {result['sent_total']}, failed {result['errors_total']}, "
          f"p99 {result['p99_ms']} ms")
    assert result["sent_total"] > 100, result
    assert (result["errors_total"], result["error_statuses"]) == (0, {}), result["error_samples"]


def test_a_killed_server_host_is_alerted_within_60_s_and_resolved_after_its_restart(host_killed):
    dying, killed, firing, back = host_killed["host"], host_killed["killed"], host_killed["firing"], host_killed["back"]
    assert firing, f"TritonServerDown of {dying} did not reach the webhook within {ALERT_DEADLINE_S + 30} s"
    assert firing["received"] - killed <= ALERT_DEADLINE_S
    assert back, f"{dying} did not get ready again"
    resolved = wait_for(lambda: first_alert("TritonServerDown", dying, "resolved", killed), ALERT_DEADLINE_S)
    assert resolved, f"TritonServerDown of {dying} was not resolved within {ALERT_DEADLINE_S} s of it serving again"
    print(f"TritonServerDown of {dying}: resolved at the webhook {resolved['received'] - back:+.1f} s after "
          f"it served again ({resolved['received'] - killed:.0f} s after the kill)")


def test_the_monitoring_is_left_converged():
    """After the host came back, every server is ready in Prometheus again (the table the ops team reads)."""
    table = wait_for(lambda: (lambda t: t if all(t.get(h, {}).get("host_ready") == 1 for h in SERVERS) else None)(
        monitoring.fleet_status(monitoring.Prometheus(prometheus_url()))), 60)
    assert table, "some server is not ready in Prometheus"
