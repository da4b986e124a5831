"""The fleet's monitoring: the one place that names the scraped metrics, the scrape jobs and the per-host queries.

Everything else is derived from here:

- the recording rules the monitoring role installs (`tritonfleet:<series>`, which the alert rules use),
- the console page Prometheus serves (`/consoles/tritonfleet.html`) and the Grafana dashboard,
- `tritonfleet status`, which prints the fleet's table from Prometheus's HTTP API.

`tritonfleet monitoring render` writes the generated files into the role (roles/monitoring/files/); a unit test
fails when they drift from this module. The metric names are those of the running software: tritonserver 2.51
(with `--metrics-config summary_latencies=true` for the latency quantiles), HAProxy 2.6's built-in exporter and
prometheus-node-exporter 1.5.
"""

from __future__ import annotations

import json
import math
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .errors import MonitoringError

# --- scrape jobs (the monitoring role's vars/main.yml names the same jobs; a unit test keeps them equal) ------

#: The label every scrape target carries: the host's inventory name.
HOST_LABEL = "host"
#: Triton's metrics port on each server's internal address.
JOB_TRITON = "triton"
#: Triton's readiness: /v2/health/ready scraped as a target (200 with an empty body = up; 400 when not ready).
JOB_TRITON_HEALTH = "triton_health"
#: HAProxy's built-in exporter (/metrics on the stats port, basic auth).
JOB_HAPROXY = "haproxy"
#: prometheus-node-exporter on every host.
JOB_NODE = "node"
JOBS = {"triton": JOB_TRITON, "triton_health": JOB_TRITON_HEALTH, "haproxy": JOB_HAPROXY, "node": JOB_NODE}

#: Window of every rate(): at least 4 scrape intervals (the role's scrape interval must stay <= 15 s).
RATE_WINDOW = "1m"

# --- metric names ---------------------------------------------------------------------------------------------

# tritonserver (per model and version).
TRITON_SUCCESS = "nv_inference_request_success"
TRITON_FAILURE = "nv_inference_request_failure"  # label `reason`: REJECTED, CANCELED, BACKEND, OTHER
TRITON_QUEUE_US = "nv_inference_queue_duration_us"
TRITON_INFERENCES = "nv_inference_count"
TRITON_EXECUTIONS = "nv_inference_exec_count"
TRITON_REQUEST_SUMMARY_US = "nv_inference_request_summary_us"  # summary_latencies=true; label `quantile`
TRITON_GPU_UTILIZATION = "nv_gpu_utilization"  # per GPU (gpu_uuid); absent on CPU hosts
# HAProxy 2.6 (per backend `proxy` and `server`, one series per `state`).
HAPROXY_SERVER_STATUS = "haproxy_server_status"
# prometheus-node-exporter.
NODE_CPU_SECONDS = "node_cpu_seconds_total"
NODE_FS_AVAIL = "node_filesystem_avail_bytes"
NODE_FS_SIZE = "node_filesystem_size_bytes"
#: Written by the role into the node exporter's textfile directory on each host: which file system holds the
#: releases (labels mountpoint, path).
RELEASES_FILESYSTEM = "tritonfleet_releases_filesystem"
#: Written by the load_balancer role into the node exporter's textfile directory on each load balancer: when each
#: TLS certificate it serves expires, in Unix seconds (label path: the certificate's file on the host).
TLS_CERTIFICATE_NOT_AFTER = "tritonfleet_tls_certificate_not_after_seconds"

#: The triton_server role's flag that makes Triton export the latency summaries used here.
TRITON_METRICS_ARGS = ("--metrics-config=summary_latencies=true",)

# The models a client calls are the ensembles; their steps (layout.model_names) are internal: counting them too
# would count each request four times.
_PROBE = "m"
STEP_SUFFIXES = tuple(name[len(_PROBE):] for name in layout.model_names(_PROBE).steps())
CLASSIFIER_SUFFIX = layout.model_names(_PROBE).classifier[len(_PROBE):]
PUBLIC_MODELS = f'model!~".+({"|".join(STEP_SUFFIXES)})"'
CLASSIFIERS = f'model=~".+{CLASSIFIER_SUFFIX}"'


def _rate(metric: str, selector: str = "") -> str:
    return f"rate({metric}{{{selector}}}[{RATE_WINDOW}])" if selector else f"rate({metric}[{RATE_WINDOW}])"


def _by_host(op: str, expr: str) -> str:
    return f"{op} by ({HOST_LABEL}) ({expr})"


def _quantile_ms(q: str) -> str:
    selector = f'{PUBLIC_MODELS}, quantile="{q}"'
    return f"{_by_host('max', f'{TRITON_REQUEST_SUMMARY_US}{{{selector}}}')} / 1000"


_IDLE = 'mode="idle"'
_REQUESTS = _by_host("sum", _rate(TRITON_SUCCESS, PUBLIC_MODELS))
_FAILURES = _by_host("sum", _rate(TRITON_FAILURE, PUBLIC_MODELS))


@dataclass(frozen=True)
class Series:
    """One per-host quantity: its recorded name (`tritonfleet:<key>`), its PromQL on the raw metrics, and how the
    page, the dashboard and the table show it."""

    key: str
    title: str
    expr: str
    column: str = ""  # header in `tritonfleet status` and the console page; "" = not shown there
    unit: str = ""  # Grafana unit
    fmt: str = "%.2f"
    gpu: bool = False  # only where the host has a GPU (may be empty on a CPU fleet)

    @property
    def record(self) -> str:
        return f"tritonfleet:{self.key}"


#: Per Triton host, in the order of the page, the dashboard and the table.
PANELS = (
    Series("host_ready", "Ready (metrics port up and /v2/health/ready 200)",
           _by_host("min", f'up{{job=~"{JOB_TRITON}|{JOB_TRITON_HEALTH}"}}'), "READY", "bool_yes_no", "%.0f"),
    Series("host_requests_per_second", "Requests/s (the models clients call)", _REQUESTS, "REQ/S", "reqps", "%.1f"),
    Series("host_failures_per_second", "Failed requests/s", _FAILURES, "FAIL/S", "reqps", "%.2f"),
    Series("host_queue_ms", "Queue time per request (ms, all steps)",
           f"{_by_host('sum', _rate(TRITON_QUEUE_US))} / {_REQUESTS} / 1000", "QUEUE_MS", "ms", "%.1f"),
    Series("host_latency_p50_ms", "Latency p50 (ms, slowest model)", _quantile_ms("0.5"), "P50_MS", "ms", "%.1f"),
    Series("host_latency_p99_ms", "Latency p99 (ms, slowest model)", _quantile_ms("0.99"), "P99_MS", "ms", "%.1f"),
    Series("host_batch_size", "Average batch size (classifier)",
           f"{_by_host('sum', _rate(TRITON_INFERENCES, CLASSIFIERS))} / "
           f"{_by_host('sum', _rate(TRITON_EXECUTIONS, CLASSIFIERS))}", "BATCH", "short", "%.1f"),
    Series("host_cpu_utilization", "CPU utilization (0-1)",
           f"1 - {_by_host('avg', _rate(NODE_CPU_SECONDS, _IDLE))}",
           "CPU", "percentunit", "%.2f"),
    Series("host_gpu_utilization", "GPU utilization (0-1)", _by_host("avg", TRITON_GPU_UTILIZATION), "GPU",
           "percentunit", "%.2f", gpu=True),
)

#: What the alert rules read, besides the panels.
RECORDS = PANELS + (
    Series("triton_metrics_up", "Triton's metrics port answers", _by_host("max", f'up{{job="{JOB_TRITON}"}}')),
    Series("triton_health_up", "Triton's /v2/health/ready answers 200",
           _by_host("max", f'up{{job="{JOB_TRITON_HEALTH}"}}')),
    Series("host_failure_ratio", "Failed / all requests", f"{_FAILURES} / ({_REQUESTS} + {_FAILURES})"),
    Series("lb_server_down", "A server is DOWN in a load balancer's backend (its health check fails)",
           f'max by ({HOST_LABEL}, proxy, server) ({HAPROXY_SERVER_STATUS}{{state="DOWN"}})'),
    Series("releases_disk_free_ratio", "Free space on the file system that holds the releases",
           f"({NODE_FS_AVAIL} / {NODE_FS_SIZE}) * on ({HOST_LABEL}, mountpoint) group_left (path) "
           f"{RELEASES_FILESYSTEM}"),
    Series("tls_certificate_expiry_seconds", "Seconds until a TLS certificate the fleet serves expires",
           f"min by ({HOST_LABEL}, path) ({TLS_CERTIFICATE_NOT_AFTER}) - time()"),
)


def series(key: str) -> Series:
    return next(s for s in RECORDS if s.key == key)


# --- generated files ------------------------------------------------------------------------------------------

GENERATED_NOTE = "Generated by `tritonfleet monitoring render` from src/tritonfleet/monitoring.py: do not edit."
RECORDS_FILE = "rules/tritonfleet-records.yml"
CONSOLE_FILE = "consoles/tritonfleet.html"
GRAFANA_FILE = "grafana/tritonfleet-fleet.json"


def recording_rules() -> str:
    """The recording rules (a Prometheus rule file): every Series as `tritonfleet:<key>`."""
    lines = ["---", f"# {GENERATED_NOTE}", "groups:", "  - name: tritonfleet-records", "    rules:"]
    for s in RECORDS:
        lines += [f"      # {s.title}", f"      - record: {s.record}", "        expr: >-"]
        lines += [f"          {part}" for part in textwrap.wrap(s.expr, 110, break_long_words=False,
                                                              break_on_hyphens=False)]
    return "\n".join(lines) + "\n"


def console_page() -> str:
    """The console page (a Go template Prometheus renders at /consoles/tritonfleet.html): one row per Triton host,
    one column per panel; the GPU column only where a host has one. Each query is a raw string (backquotes)."""
    header = "".join(f"<th>{s.column}</th>" for s in PANELS if not s.gpu)
    gpu = [s for s in PANELS if s.gpu]
    rows = []
    for s in PANELS:
        cell = (f'{{{{ range query `{s.expr}` }}}}{{{{ if eq .Labels.{HOST_LABEL} $host }}}}'
                f'{{{{ .Value | printf "{s.fmt}" }}}}{{{{ end }}}}{{{{ end }}}}')
        rows.append("      " + (f"{{{{ if $gpu }}}}<td>{cell}</td>{{{{ end }}}}" if s.gpu else f"<td>{cell}</td>"))
    ready = PANELS[0]
    gpu_expr = " or ".join(s.expr for s in gpu)
    return "\n".join([
        f"{{{{/* {GENERATED_NOTE} */}}}}",
        '{{ template "tritonfleet.head" "tritonfleet: the fleet" }}',
        "<h1>tritonfleet: the fleet</h1>",
        "<p>Per Triton host, over the last " + RATE_WINDOW + " (refreshes every 10 s). READY: the metrics port answers"
        " and /v2/health/ready is 200. Latencies: the slowest public model's quantile.</p>",
        f"{{{{ $gpu := query `{gpu_expr}` }}}}",
        "<table>",
        f"  <tr><th>HOST</th>{header}{{{{ if $gpu }}}}{''.join(f'<th>{s.column}</th>' for s in gpu)}{{{{ end }}}}</tr>",
        f"  {{{{ range query `{ready.expr}` | sortByLabel `{HOST_LABEL}` }}}}{{{{ $host := .Labels.{HOST_LABEL} }}}}",
        '    <tr class="{{ if eq .Value 1.0 }}ready{{ else }}down{{ end }}"><td>{{ $host }}</td>',
        *rows,
        "    </tr>",
        "  {{ end }}",
        "</table>",
        '<p><a href="{{ pathPrefix }}/alerts">Alerts</a> · <a href="{{ pathPrefix }}/targets">Targets</a></p>',
        '{{ template "tritonfleet.tail" }}',
        "",
    ])


def grafana_dashboard() -> dict:
    """A Grafana dashboard (importable JSON; the Prometheus data source is asked for at import): one time series
    panel per Series, by host, on the raw metric names."""
    panels = []
    for i, s in enumerate(PANELS):
        panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": s.title,
            "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": s.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"refId": "A", "expr": s.expr, "legendFormat": f"{{{{{HOST_LABEL}}}}}",
                         "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}}],
        })
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus",
                      "pluginName": "Prometheus"}],
        "title": "tritonfleet: the fleet",
        "description": GENERATED_NOTE,
        "uid": "tritonfleet-fleet",
        "tags": ["tritonfleet", "triton"],
        "timezone": "browser",
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "schemaVersion": 39,
        "editable": True,
        "panels": panels,
    }


def generated_files() -> dict[str, str]:
    """Path under the role's files/ -> content."""
    return {
        RECORDS_FILE: recording_rules(),
        CONSOLE_FILE: console_page(),
        GRAFANA_FILE: json.dumps(grafana_dashboard(), indent=2) + "\n",
    }


def render(folder: Path) -> list[Path]:
    """Write the generated files under `folder` (the role's files/); returns the files that changed."""
    changed = []
    for name, content in generated_files().items():
        path = folder / name
        if not path.is_file() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            changed.append(path)
    return changed


# --- the fleet's table from Prometheus --------------------------------------------------------------------------


class Prometheus:
    """A client of Prometheus's HTTP API (instant queries). Never through a proxy: Prometheus is internal."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def query(self, expr: str) -> list[dict]:
        """The instant vector of `expr`: [{"metric": {...}, "value": [time, "text"]}, ...]."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query: Prometheus answers 400 with its error
            try:
                body = json.load(exc)
            except ValueError:
                raise MonitoringError(f"Prometheus at {self.url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MonitoringError(f"cannot query Prometheus at {self.url}: {getattr(exc, 'reason', exc)}") from exc
        if body.get("status") != "success":
            raise MonitoringError(f"Prometheus at {self.url} refused {expr!r}: {body.get('errorType')}: "
                                  f"{body.get('error')}")
        if body["data"]["resultType"] != "vector":
            raise MonitoringError(f"{expr!r} is not an instant vector ({body['data']['resultType']})")
        return body["data"]["result"]


def fleet_status(prometheus: Prometheus) -> dict[str, dict[str, float]]:
    """host -> {panel key: value} for every host the readiness panel knows (the Triton servers)."""
    table: dict[str, dict[str, float]] = {}
    for s in PANELS:
        for sample in prometheus.query(s.expr):
            host = sample["metric"].get(HOST_LABEL)
            if host is None or (s is not PANELS[0] and host not in table):
                continue
            table.setdefault(host, {})[s.key] = float(sample["value"][1])
    return dict(sorted(table.items()))


def _cell(s: Series, value: float | None) -> str:
    if value is None:
        return "-"
    if s.key == "host_ready":
        return "yes" if value == 1 else "NO"
    if math.isnan(value):
        return "-"
    return s.fmt % value


def format_status(table: dict[str, dict[str, float]]) -> str:
    """The fleet's table; the GPU column only when some host has a GPU."""
    columns = [s for s in PANELS if not s.gpu or any(s.key in row for row in table.values())]
    rows = [["HOST", *(s.column for s in columns)]]
    rows += [[host, *(_cell(s, row.get(s.key)) for s in columns)] for host, row in table.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(r, widths, strict=True))).rstrip() for r in rows)
