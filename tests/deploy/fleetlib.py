"""Helpers for the deploy tests: run ansible-playbook against the local fleet and parse its output.

The fleet must be deployed (scripts/deploy-local.sh) before these tests run; scripts/test-deploy.sh does both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonfleet import layout

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
INVENTORY = ROOT / "inventories" / "local"
LOG_DIR = ROOT / "build" / "test-deploy"
#: Which release each host of the local fleet serves, written by the deploy (tritonfleet release record).
RECORD = ROOT / "build" / "deployed" / "local.json"


def inventory_group(group: str, inventory: Path = INVENTORY) -> list[str]:
    """The hosts of `group` in the local inventory, or another one (the one place that names them)."""
    out = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--list"], check=True,
                         capture_output=True, text=True).stdout
    data = json.loads(out)

    def hosts(name: str) -> list[str]:
        entry = data.get(name, {})
        return entry.get("hosts", []) + [h for child in entry.get("children", []) for h in hosts(child)]

    return list(dict.fromkeys(hosts(group)))


def host_var(host: str, name: str, inventory: Path = INVENTORY):
    """A variable of a host in the local inventory (or another one), as written there (group_vars merged; templates
    not rendered)."""
    out = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--host", host], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)[name]


SERVERS = inventory_group("triton_servers")
CONVERSION_HOST = inventory_group("conversion_hosts")[0]

RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)"
)


@dataclass
class PlaybookRun:
    args: list[str]
    returncode: int
    output: str
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP: host -> {ok, changed, unreachable, failed}."""
        out: dict[str, dict[str, int]] = {}
        in_recap = False
        for line in self.output.splitlines():
            if line.startswith("PLAY RECAP"):
                in_recap = True
                continue
            if in_recap:
                m = RECAP_LINE.match(line.strip())
                if m:
                    out[m["host"]] = {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        return out

    def play_output(self, title: str) -> str:
        """The output of the play whose name starts with `title` (up to the next play or the recap)."""
        m = re.search(rf"^PLAY \[{re.escape(title)}.*?(?=^PLAY |\Z)", self.output, re.S | re.M)
        return m.group(0) if m else ""


def rolling_play(playbook: str = "deploy.yml") -> str:
    """The name of the playbook's rolling play (the one play with `serial`), read from the playbook itself."""
    plays = yaml.safe_load((ROOT / "playbooks" / playbook).read_text())
    names = [play["name"] for play in plays if "serial" in play]
    if len(names) != 1:
        raise AssertionError(f"{playbook}: expected one play with serial, found {names}")
    return names[0]


def playbook_command(playbook: str, *args: str, inventory: list[Path] | None = None) -> list[str]:
    cmd = [str(VENV_BIN / "ansible-playbook")]
    for inv in inventory or [INVENTORY]:
        cmd += ["-i", str(inv)]
    # TRITONFLEET_DEPLOY_ARGS: extra ansible-playbook arguments for every run (e.g. "-e model_conversion_model=DIR").
    return cmd + [str(ROOT / "playbooks" / playbook), *args,
                  *shlex.split(os.environ.get("TRITONFLEET_DEPLOY_ARGS", ""))]


def playbook_env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PATH=f"{VENV_BIN}:{os.environ['PATH']}")


def save_log(log_name: str, run: PlaybookRun) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    footer = f"[{run.seconds:.0f} s, rc {run.returncode}]"
    (LOG_DIR / f"{log_name}.log").write_text(f"$ {' '.join(run.args)}\n{run.output}\n{footer}\n")


def ansible_playbook(playbook: str, *args: str, inventory: list[Path] | None = None, log_name: str = "",
                     env: dict[str, str] | None = None) -> PlaybookRun:
    cmd = playbook_command(playbook, *args, inventory=inventory)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=playbook_env() | (env or {}), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    run = PlaybookRun(cmd, proc.returncode, proc.stdout, time.monotonic() - start)
    if log_name:
        save_log(log_name, run)
    shown = " ".join(arg if len(arg) <= 200 else f"{arg[:120]}...({len(arg)} chars)" for arg in cmd[1:])
    print(f"{shown}: rc {run.returncode} in {run.seconds:.0f} s")
    print("\n".join(run.output.splitlines()[-12:]))
    return run


def smoke_test(host: str, release: Path) -> subprocess.CompletedProcess[str]:
    """`tritonfleet smoke-test` of every model of `release` against one fleet host's gRPC port, from the
    controller."""
    return subprocess.run(
        [str(VENV_BIN / "tritonfleet"), "smoke-test", "--url", f"{host_address(host)}:8001", "--release",
         str(release)],
        capture_output=True, text=True, env=playbook_env() | {"no_proxy": "*", "NO_PROXY": "*"},
    )


def fleet_docker(host: str, *args: str) -> str:
    """Run `docker ARGS` on the Docker engine inside a fleet host."""
    proc = subprocess.run(["docker", "exec", host, "docker", *args], check=True, capture_output=True, text=True)
    return proc.stdout.strip()


def host_address(host: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", host],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[0]


# --- the hardened fleet: TLS at the load balancer, the admin key, load --------------------------------------

#: What the load balancer's certificate chains to, and the admin key of the servers' restricted APIs (both made
#: by the playbooks on the controller for the local fleet).
CA_FILE = ROOT / "build" / "pki" / "ca.crt"
SECRETS = ROOT / "build" / "secrets"
BALANCER = inventory_group("load_balancers")[0]


def admin_key() -> str:
    """The servers' admin key (the password lookup's file: the key, then maybe ` salt=...`)."""
    return (SECRETS / "triton-admin-key").read_text().split()[0]


#: The users of the failure tests' load (closed loop, through the load balancer): fewer than one server's maxconn
#: there (load_balancer_server_maxconn), so the fleet carries them with one server out.
USERS = 24


class Load:
    """Closed-loop gRPC users against the load balancer (TLS) in a background process: tritonfleet's load
    generator. `result()` waits and returns its JSON (sent_total, errors_total, error_statuses, p99_ms, ...)."""

    def __init__(self, users: int, duration: float, texts: Path, model: str = "sentiment", timeout: float = 60,
                 target: str | None = None, ca_file: Path | None = CA_FILE) -> None:
        self.url = target or f"{host_address(BALANCER)}:8001"
        cmd = [str(VENV_BIN / "python"), "-m", "tritonfleet.bench.loadgen", "--mode", "grpc-text", "--url",
               self.url, "--data", str(texts), "--users", str(users), "--duration", str(duration),
               "--warmup", "0", "--timeout", str(timeout), "--model", model]
        if ca_file:
            cmd += ["--ca-file", str(ca_file)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=playbook_env() | {"no_proxy": "*", "NO_PROXY": "*"},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.duration = duration

    def stop(self) -> dict:
        """End the load now (the users finish their requests in flight) and return the result."""
        self.proc.send_signal(signal.SIGTERM)
        return self.result()

    def result(self) -> dict:
        out, err = self.proc.communicate(timeout=self.duration + 300)
        assert self.proc.returncode == 0, f"the load generator failed: {err[-2000:]}"
        result = json.loads(out.strip().splitlines()[-1])
        print(f"load on {self.url}: sent {result['sent_total']}, failed {result['errors_total']} "
              f"{result['error_statuses']}, p99 {result['p99_ms']} ms, {result['throughput']}/s")
        return result


def bring_back(host: str, seconds: float = 180) -> None:
    """Start a fleet host that a test killed and wait for the Docker engine inside it."""
    start_host()
    wait_for_engine(host, seconds)


def start_host() -> None:
    """Start the fleet's hosts that are not running (scripts/fleet.sh create): a killed host's container again."""
    subprocess.run([str(ROOT / "scripts" / "fleet.sh"), "create"], cwd=ROOT, check=True, capture_output=True)


def wait_for_engine(host: str, seconds: float = 180) -> None:
    """Wait for the Docker engine inside a fleet host that was just started."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if subprocess.run(["docker", "exec", host, "docker", "info"], capture_output=True).returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"the Docker engine inside {host} did not come back within {seconds:.0f} s")


def container_memory_mb(host: str, container: str = "tritonserver") -> float:
    """The resident memory of a container on a fleet host, from `docker stats` (MiB)."""
    usage = fleet_docker(host, "stats", "--no-stream", "--format", "{{.MemUsage}}", container).split("/")[0].strip()
    value, unit = re.match(r"([0-9.]+)\s*([A-Za-z]+)", usage).groups()
    return float(value) * {"B": 1 / 2**20, "KiB": 1 / 1024, "kB": 1 / 1024, "MiB": 1, "MB": 1, "GiB": 1024,
                           "GB": 1024}[unit]


def load_texts(folder: Path) -> Path:
    """The texts the load sends: the demo models' held-out texts, as the load generator reads them."""
    from tritonfleet.demo import TASKS

    path = folder / "texts.json"
    path.write_text(json.dumps({"texts": [t for task in TASKS.values() for t, _ in task.held_out]}))
    return path


def balancer_config() -> str:
    """The load balancer's deployed HAProxy config."""
    path = yaml.safe_load((ROOT / "roles" / "load_balancer" / "defaults" / "main.yml").read_text())[
        "load_balancer_config_file"]
    return subprocess.run(["docker", "exec", BALANCER, "cat", path], check=True, capture_output=True,
                          text=True).stdout


def max_request_size() -> int:
    """The largest request body the load balancer admits, read from its deployed config (its 413 rule)."""
    bound = re.search(r"^\s*http-request return status 413 .* if \{ req\.hdr_val\(content-length\) gt (\d+) \}",
                      balancer_config(), re.M)
    assert bound, f"{BALANCER}: its HAProxy config sets no bound on the request size"
    return int(bound.group(1))


def balancer_limits() -> tuple[int, int, float]:
    """(requests in flight per server, requests that may wait in the gRPC queue, seconds a request may wait there),
    read from the load balancer's deployed HAProxy config: what it enforces, whatever the inventory said."""
    config = balancer_config()
    maxconn = re.search(r"^\s*default-server .*\bmaxconn (\d+)", config, re.M)
    max_queue = re.search(r"^\s*http-request return .* if \{ queue\(\) ge (\d+) \}", config, re.M)
    queue = re.search(r"^\s*timeout queue (\d+)(ms|s|m)?\s*$", config, re.M)
    assert maxconn and max_queue and queue, f"{BALANCER}: no server maxconn, queue bound or queue timeout"
    scale = {"ms": 0.001, None: 0.001, "s": 1.0, "m": 60.0}[queue.group(2)]
    return int(maxconn.group(1)), int(max_queue.group(1)), int(queue.group(1)) * scale


# --- who reaches the Triton ports -------------------------------------------------------------------------------

PROBE = ("import socket, sys\n"
         "try:\n"
         "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); print('open')\n"
         "except ConnectionRefusedError:\n"
         "    print('refused')\n"
         "except OSError as error:\n"
         "    print(type(error).__name__)\n")


def connect_from(container: str, address: str, port: int) -> str:
    """What a TCP connection from a container on this machine to address:port meets: open, refused, or the error."""
    return subprocess.run(["docker", "exec", container, "python3", "-c", PROBE, address, str(port)], check=True,
                          capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def outsider_on(network: str, name: str = "tf-outsider"):
    """A machine on a fleet's network that is neither a load balancer, a monitoring host nor the controller: a
    container of the hosts' image with an address of its own (and NET_ADMIN, to route through a server)."""
    images = yaml.safe_load((ROOT / "docker" / "images.yml").read_text())
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", network, "--cap-add", "NET_ADMIN",
                    "--entrypoint", "sleep", images["debian12_systemd"], "infinity"], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


# --- gRPC through the load balancer -------------------------------------------------------------------------------


def grpc_status(channel: grpc.Channel, method: str, request, metadata=()) -> str:
    """The status of one call of GRPCInferenceService's `method`: "StatusCode.OK" or the error's code."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    try:
        getattr(stub, method)(request, timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        return str(exc.code())
    return "StatusCode.OK"


def lb_channel() -> grpc.Channel:
    """A channel to the load balancer's gRPC port, over TLS with the fleet's own CA."""
    credentials = grpc.ssl_channel_credentials(CA_FILE.read_bytes())
    return grpc.secure_channel(f"{host_address(BALANCER)}:8001", credentials)


def text_request(model: str, text: str) -> service_pb2.ModelInferRequest:
    """An inference request of one text for a public model (an ensemble: one BYTES input)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=layout.TEXT, datatype="BYTES", shape=[1, 1])
    data = text.encode()
    request.raw_input_contents.append(len(data).to_bytes(4, "little") + data)
    return request


@dataclass(frozen=True)
class Call:
    at: float  # time.time() when it was sent
    status: str  # the gRPC status code's name: OK, UNAVAILABLE, ...
    details: str


class Poller:
    """One inference of `model` through the load balancer every `interval` seconds, in a thread, until stop(): who
    answered what, and when, while a rollout runs."""

    def __init__(self, model: str, interval: float = 0.5) -> None:
        self.model, self.interval, self.calls = model, interval, []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(lb_channel())
        request = text_request(self.model, "what a lovely day")
        while not self._stopped.is_set():
            at = time.time()
            try:
                stub.ModelInfer(request, timeout=10)
                self.calls.append(Call(at, "OK", ""))
            except grpc.RpcError as exc:
                self.calls.append(Call(at, exc.code().name, exc.details() or ""))
            self._stopped.wait(self.interval)

    def stop(self) -> list[Call]:
        self._stopped.set()
        self._thread.join(timeout=30)
        return self.calls
