"""The failure drill at full scale (scripts/chaos.sh): closed-loop users of the stock gRPC client (no retry settings)
through the load balancer over TLS, while one fault at a time strikes a deployed local fleet; what each request
got, over time.

Scenarios, each from a converged fleet and leaving it converged:
- container mode (inventories/local): `none`, `host-killed` (`docker kill` of a server host, started again
  --reboot-after seconds later), `triton-killed` (SIGKILL of the tritonserver process, the host alive; the restart
  policy brings it back), `triton-stopped` (`docker kill` of the Triton container, which the restart policy treats
  as a manual stop: one server serves alone until the drill starts it again), `rolling-deploy` (deploy.yml of a new
  release), `broken-release` (a release that fails its smoke test: rolled back, the rollout stops), `lb-reload`
  (HAProxy reloads its configuration);
- swarm mode (inventories/swarm-local): `swarm-node-killed` (`docker kill` of a node that runs a task),
  `swarm-rolling-update` (deploy.yml of a new release).

Writes chaos.json (per scenario: sent, failed by status, p50/p99/max, throughput before and after the fault, the
seconds until a server was out at the load balancer and until the fleet was whole again) and chaos.png (throughput,
failures and p99 per second, the fault and the recovery marked). The faults act from outside the hosts, as the
hardware or an operator's console would: `docker kill` and `docker exec` on the fleet's containers.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import BUILD_DIR, PROJECT_ROOT
from ..release import RELEASE_FILE, Release, deployed, write_sums

VENV_BIN = Path(sys.executable).parent
CONTAINER_SCENARIOS = ("none", "host-killed", "triton-killed", "triton-stopped", "rolling-deploy", "broken-release",
                       "lb-reload")
SWARM_SCENARIOS = ("swarm-node-killed", "swarm-rolling-update")
SCENARIOS = CONTAINER_SCENARIOS + SWARM_SCENARIOS


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", no_proxy="*", NO_PROXY="*",
                PATH=f"{VENV_BIN}:{os.environ['PATH']}")


def sh(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=PROJECT_ROOT, capture_output=True, text=True, check=check,
                          env=_env() | (env or {}))


# --- the fleet --------------------------------------------------------------------------------------------------------


@dataclass
class Fleet:
    """A deployed fleet of this machine, as its inventory names it."""

    inventory: Path
    #: What scripts/fleet.sh needs to find this fleet's hosts (its inventory).
    fleet_env: dict[str, str]
    groups: dict[str, list[str]] = field(default_factory=dict)
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Swarm mode: the nodes that ran a task of the Triton service before the fault.
    tasks_before: set[str] = field(default_factory=set)
    #: Extra arguments of every ansible-playbook run (--playbook-args).
    playbook_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        data = json.loads(sh(str(VENV_BIN / "ansible-inventory"), "-i", str(self.inventory), "--list").stdout)
        self.hostvars = data.get("_meta", {}).get("hostvars", {})

        def hosts(name: str) -> list[str]:
            entry = data.get(name, {})
            return entry.get("hosts", []) + [h for child in entry.get("children", []) for h in hosts(child)]

        self.groups = {name: list(dict.fromkeys(hosts(name))) for name in data if name != "_meta"}

    @property
    def servers(self) -> list[str]:
        return self.groups.get("triton_servers", [])

    @property
    def balancer(self) -> str:
        return self.groups["load_balancers"][0]

    @property
    def swarm(self) -> bool:
        return self.hostvars.get(self.servers[0], {}).get("tritonfleet_orchestrator") == "swarm"

    @property
    def record(self) -> Path:
        name = self.hostvars.get(self.servers[0], {}).get("tritonfleet_fleet", "default")
        return BUILD_DIR / "deployed" / f"{name}.json"

    def address(self, host: str) -> str:
        out = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", host).stdout
        return out.split()[0]

    def running(self, host: str) -> bool:
        return sh("docker", "inspect", "-f", "{{.State.Running}}", host, check=False).stdout.strip() == "true"

    def playbook(self, playbook: str, *args: str, log_name: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory),
               str(PROJECT_ROOT / "playbooks" / playbook), *args, *self.playbook_args]
        proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        logs = BUILD_DIR / "chaos" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{log_name}.log").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n[rc {proc.returncode}]\n")
        return proc

    def start_hosts(self) -> None:
        """Start the fleet's hosts that are not running (a killed host boots again)."""
        sh(str(PROJECT_ROOT / "scripts" / "fleet.sh"), "create", env=self.fleet_env)

    def stats(self, backend: str = "triton_grpc") -> dict[str, str]:
        """HAProxy's view of one backend: server -> status (UP, DOWN, MAINT, ...), from its stats CSV."""
        rows = balancer_stats(self.address(self.balancer), backend)
        return {name: row["status"].split()[0] for name, row in rows.items()}

    def up(self) -> set[str]:
        try:
            return {name for name, status in self.stats().items() if status == "UP"}
        except OSError:
            return set()

    def manager_docker(self, *args: str) -> str:
        return sh("docker", "exec", self.groups["swarm_managers"][0], "docker", *args).stdout.strip()

    def swarm_tasks(self) -> set[str]:
        """The nodes that run a task of the Triton service now."""
        service = self.manager_docker("service", "ls", "--filter", "label=org.tritonfleet.role=triton_server",
                                      "--format", "{{.Name}}")
        lines = self.manager_docker("service", "ps", "--filter", "desired-state=running", "--format",
                                    "{{.Node}} {{.CurrentState}}", service).splitlines()
        return {line.split()[0] for line in lines if line.split()[1] == "Running"}


def balancer_stats(address: str, backend: str = "triton_grpc", port: int = 8404,
                   timeout: float = 10) -> dict[str, dict[str, str]]:
    """A local fleet's HAProxy stats of one backend's servers: name -> row of the stats CSV (status, stot, ...)."""
    return {row["svname"]: row for row in balancer_rows(address, port, timeout) if row["pxname"] == backend}


def balancer_rows(address: str, port: int = 8404, timeout: float = 10) -> list[dict[str, str]]:
    """A local fleet's HAProxy stats of every backend's servers: the rows of the stats CSV (pxname, svname, status,
    stot, ...). The stats page speaks TLS with the fleet's own CA and asks for the password the local inventory
    generated."""
    password = (BUILD_DIR / "secrets" / "haproxy-stats-password").read_text().split()[0]
    request = urllib.request.Request(f"https://{address}:{port}/stats;csv")
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    manager.add_password(None, request.full_url, "stats", password)
    context = ssl.create_default_context(cafile=str(BUILD_DIR / "pki" / "ca.crt"))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context),
                                         urllib.request.HTTPBasicAuthHandler(manager))
    with opener.open(request, timeout=timeout) as response:
        rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
        return [row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")]


def wait_for(what: str, condition: Callable[[], Any], seconds: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {seconds:.0f} s")


# --- releases the drill deploys ---------------------------------------------------------------------------------------


def new_release(good: Release, folder: Path, name: str) -> Release:
    """Another release that serves what `good` serves: its files, another key in release.json, so another id, and
    every server is restarted with it (a rolling deploy). New on every call: a folder of its own under `folder`
    (two scenarios of one drill, rolling-deploy and swarm-rolling-update, each make one)."""
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=folder))
    shutil.copytree(good.path, path, dirs_exist_ok=True)
    info = json.loads((path / RELEASE_FILE).read_text())
    info["key"] = f"{name[:6]}{time.time_ns() % 16**10:010x}"
    (path / RELEASE_FILE).write_text(json.dumps(info))
    write_sums(path)
    return Release.open(path)


def broken_release(good: Release, folder: Path) -> Release:
    """A new release whose first model's golden file says the opposite labels: it deploys, and fails its smoke
    test."""
    release = new_release(good, folder, "broken")
    golden_path = release.path / good.models[0].golden
    golden = json.loads(golden_path.read_text())
    for entry in golden["entries"]:
        entry["label"] = next(label for label in golden["labels"] if label != entry["label"])
    golden_path.write_text(json.dumps(golden))
    write_sums(release.path)
    return Release.open(release.path)


# --- one scenario -----------------------------------------------------------------------------------------------------


@dataclass
class Drill:
    users: int
    duration: float
    fault_at: float
    reboot_after: float
    output: Path
    texts: Path
    work: Path


class Load:
    """The load generator in the background: the stock tritonclient.grpc.aio, no retry settings, TLS."""

    def __init__(self, fleet: Fleet, drill: Drill, name: str) -> None:
        self.events_file = drill.output / "events" / f"{name}.json"
        self.events_file.parent.mkdir(parents=True, exist_ok=True)
        ca = BUILD_DIR / "pki" / "ca.crt"
        cmd = [str(VENV_BIN / "python"), "-m", "tritonfleet.bench.loadgen", "--mode", "grpc-text", "--url",
               f"{fleet.address(fleet.balancer)}:8001", "--data", str(drill.texts), "--users", str(drill.users),
               "--duration", "3600", "--warmup", "0", "--timeout", "60", "--model", "sentiment",
               "--ca-file", str(ca), "--events", str(self.events_file)]
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.started = time.time()

    def stop(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=300)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the load generator failed: {err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1]), json.loads(self.events_file.read_text())


def _fault(fleet: Fleet, drill: Drill, name: str, notes: dict[str, Any]) -> Callable[[], None]:
    """The scenario's fault: a function that strikes (and returns once the fault is over, for the faults that are
    an action: a deploy, a reload, a reboot)."""
    victim = fleet.servers[-1]
    if name == "none":
        return lambda: None
    if name == "host-killed":
        def kill_host() -> None:
            sh("docker", "kill", victim)
            notes["victim"] = victim
            time.sleep(drill.reboot_after)
            fleet.start_hosts()
        return kill_host
    if name == "triton-killed":
        notes["victim"] = victim

        def kill_triton() -> None:
            sh("docker", "exec", victim, "pkill", "-KILL", "-x", "tritonserver")
        return kill_triton
    if name == "triton-stopped":
        def stop_triton() -> None:
            sh("docker", "exec", victim, "docker", "kill", "tritonserver")
            notes["victim"] = victim
            time.sleep(drill.reboot_after)
            sh("docker", "exec", victim, "docker", "start", "tritonserver")
        return stop_triton
    if name in ("rolling-deploy", "broken-release", "swarm-rolling-update"):
        good = deployed(fleet.record)
        release = (broken_release(good, drill.work) if name == "broken-release"
                   else new_release(good, drill.work, "update"))
        notes["release"] = release.id

        def deploy() -> None:
            run = fleet.playbook("deploy.yml", "-e", json.dumps({"model_conversion_release": release.as_json()}),
                                 log_name=name)
            notes["playbook_rc"] = run.returncode
            notes["playbook_said"] = next((line.strip() for line in run.stdout.splitlines()
                                           if "ROLLOUT STOPPED" in line), "")[:600]
        return deploy
    if name == "lb-reload":
        def reload() -> None:
            sh("docker", "exec", fleet.balancer, "systemctl", "reload", "haproxy")
        return reload
    if name == "swarm-node-killed":
        node = sorted(fleet.swarm_tasks())[0]
        notes["victim"] = node

        def kill_node() -> None:
            sh("docker", "kill", node)
            before = fleet.tasks_before
            wait_for("the task running on another node",
                     lambda: len(tasks := fleet.swarm_tasks()) == len(before) and node not in tasks, 300, 1)
            notes["rescheduled_after_s"] = round(time.time() - notes["fault_unix"], 1)
        return kill_node
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def run_scenario(fleet: Fleet, drill: Drill, name: str) -> dict[str, Any]:
    log(f"{name}: {drill.users} users through {fleet.balancer} (TLS), fault at {drill.fault_at:.0f} s")
    fleet.tasks_before = fleet.swarm_tasks() if fleet.swarm else set()
    before = wait_for("every server UP at the load balancer before the fault", fleet.up, 300)
    notes: dict[str, Any] = {"servers_up_before": sorted(before)}
    strike = _fault(fleet, drill, name, notes)
    load = Load(fleet, drill, name)
    time.sleep(drill.fault_at)
    notes["fault_unix"] = time.time()
    out_at: list[float] = []

    def watch() -> None:  # when the load balancer first has a server out
        while not out_at and not done.is_set():
            if fleet.up() != before:
                out_at.append(time.time())
            time.sleep(0.25)

    done = threading.Event()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    strike()
    if name not in ("none", "lb-reload"):  # these take a server out: the fleet is whole again once it is back
        try:
            wait_for("a server out at the load balancer", lambda: out_at, 30, 0.2)
        except RuntimeError:
            log(f"{name}: the load balancer never had a server out")
    whole = wait_for("the fleet whole again (every server UP at the load balancer)",
                     lambda: fleet.up() >= before if not fleet.swarm else len(fleet.up()) >= len(before), 600)
    whole_at: float | None = time.time() if whole else None
    done.set()
    # The rest of the run, and at least 10 s after the fleet is whole.
    end = max(load.started + drill.duration, (whole_at or time.time()) + 10)
    time.sleep(max(0.0, end - time.time()))
    result, timeline = load.stop()
    fault_t = notes.pop("fault_unix") - timeline["unix_begin"]
    if name == "swarm-node-killed":
        fleet.start_hosts()
        wait_for(f"{notes['victim']} back in the swarm",
                 lambda: "Ready" in fleet.manager_docker("node", "inspect", "-f", "{{.Status.State}}",
                                                          notes["victim"]).capitalize(), 300, 2)
    events = timeline["events"]
    failed: dict[str, int] = {}
    for _, _, status in events:
        if status != "OK":
            failed[status] = failed.get(status, 0) + 1
    ok_before = sum(1 for t, _, s in events if s == "OK" and t < fault_t)
    ok_after = sum(1 for t, _, s in events if s == "OK" and t >= fault_t)
    total_t = max((t for t, _, _ in events), default=fault_t)
    if name == "none":  # nothing struck: nothing to recover from
        out_at, whole_at = [], None
    summary = {
        "scenario": name, "mode": "swarm" if fleet.swarm else "container", "users": drill.users,
        "sent": result["sent_total"], "failed": result["errors_total"], "failed_by_status": failed,
        "error_samples": result["error_samples"],
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "max_ms": result["max_ms"],
        "throughput_before": round(ok_before / fault_t, 1) if fault_t > 0 else None,
        "throughput_after": round(ok_after / max(1e-9, total_t - fault_t), 1),
        "fault_at_s": round(fault_t, 1), "run_s": round(total_t, 1),
        "server_out_after_s": round(out_at[0] - timeline["unix_begin"] - fault_t, 1) if out_at else None,
        "whole_after_s": round(whole_at - timeline["unix_begin"] - fault_t, 1) if whole_at else None,
        **notes,
    }
    log(f"{name}: sent {summary['sent']}, failed {summary['failed']} {failed}, p99 {summary['p99_ms']} ms, "
        f"whole after {summary['whole_after_s']} s")
    return summary


def converge(fleet: Fleet, name: str) -> None:
    """Put the fleet back on the release its inventory names (after a scenario that deployed another one)."""
    run = fleet.playbook("deploy.yml", log_name=f"{name}-converge")
    if run.returncode != 0:
        raise RuntimeError(f"converging the fleet after {name} failed: see build/chaos/logs/{name}-converge.log")


# --- the plot ---------------------------------------------------------------------------------------------------------


def plot(results: list[dict[str, Any]], output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    png = output / "chaos.png"
    fig, axes = plt.subplots(len(results), 1, figsize=(12, 2.6 * len(results)), squeeze=False)
    for ax, res in zip(axes[:, 0], results, strict=True):
        events = json.loads((output / "events" / f"{res['scenario']}.json").read_text())["events"]
        seconds = int(max((t for t, _, _ in events), default=1)) + 1
        ok = np.zeros(seconds)
        bad = np.zeros(seconds)
        lat: list[list[float]] = [[] for _ in range(seconds)]
        for t, latency, status in events:
            if status == "OK":
                ok[int(t)] += 1
                lat[int(t)].append(latency * 1000)
            else:
                bad[int(t)] += 1
        ax.plot(range(seconds), ok, color="tab:blue", label="answered/s")
        ax.bar(range(seconds), bad, color="tab:red", label="failed/s")
        ax.set_ylabel("requests/s")
        twin = ax.twinx()
        twin.plot(range(seconds), [np.percentile(v, 99) if v else np.nan for v in lat], color="tab:gray",
                  linewidth=0.8, label="p99 ms")
        twin.set_ylabel("p99 ms")
        ax.axvline(res["fault_at_s"], color="black", linestyle="--", label="fault")
        if res.get("whole_after_s") is not None:
            ax.axvline(res["fault_at_s"] + res["whole_after_s"], color="tab:green", linestyle=":", label="whole")
        ax.set_title(f"{res['mode']}: {res['scenario']}: {res['sent']} sent, {res['failed']} failed, "
                     f"p99 {res['p99_ms']} ms", fontsize=10)
        ax.legend(loc="lower left", fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    return png


# --- the command ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonfleet.bench.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated (default: all: {SCENARIOS})")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--duration", type=float, default=60, help="seconds of load per scenario, at least (default 60)")
    p.add_argument("--fault-at", type=float, default=20, help="seconds into the load (default 20)")
    p.add_argument("--reboot-after", type=float, default=15,
                   help="host-killed, triton-stopped: seconds until the host or container is started again")
    p.add_argument("--inventory", type=Path, default=PROJECT_ROOT / "inventories" / "local")
    p.add_argument("--swarm-inventory", type=Path, default=PROJECT_ROOT / "inventories" / "swarm-local")
    p.add_argument("--output", type=Path, default=BUILD_DIR / "chaos")
    p.add_argument("--playbook-args", default="",
                   help="extra arguments of every ansible-playbook run, e.g. \"-e load_balancer_max_queue=64\"")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"chaos: unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    from ..demo import TASKS

    texts = args.output / "texts.json"
    texts.write_text(json.dumps({"texts": [t for task in TASKS.values() for t, _ in task.held_out]}))
    results = []
    with tempfile.TemporaryDirectory(prefix="chaos-") as work:
        drill = Drill(args.users, args.duration, args.fault_at, args.reboot_after, args.output, texts, Path(work))
        for name in names:
            swarm = name in SWARM_SCENARIOS
            inventory = args.swarm_inventory if swarm else args.inventory
            fleet = Fleet(inventory, {"TRITONFLEET_INVENTORY": str(inventory.relative_to(PROJECT_ROOT))},
                          playbook_args=shlex.split(args.playbook_args))
            if not all(fleet.running(h) for h in fleet.servers + [fleet.balancer]):
                print(f"chaos: the fleet of {inventory} is not running (scripts/chaos.sh deploys it)", file=sys.stderr)
                return 1
            results.append(run_scenario(fleet, drill, name))
            if name in ("rolling-deploy", "broken-release", "swarm-rolling-update"):
                log(f"{name}: converging the fleet on its inventory's release")
                converge(fleet, name)
            report = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "users": args.users, "duration_s": args.duration,
                      "client": "tritonclient.grpc.aio, no retry settings, TLS through the load balancer",
                      "scenarios": results}
            (args.output / "chaos.json").write_text(json.dumps(report, indent=2))
    png = plot(results, args.output)
    failed = {r["scenario"]: r["failed"] for r in results if r["failed"]}
    print(json.dumps([{k: r[k] for k in ("scenario", "mode", "sent", "failed", "failed_by_status", "p99_ms",
                                         "whole_after_s")} for r in results], indent=1))
    print(f"results: {args.output / 'chaos.json'}, {png}; {failed if failed else 'no request failed'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
