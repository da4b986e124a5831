"""Swarm mode (docs/SWARM.md) on a fleet of its own: inventories/swarm-local, five systemd containers with their own
Docker engine on the network tritonfleet-swarm (a manager that also runs the load balancer and the conversion, four
workers that may run Triton). It needs the local fleet's registry (scripts/registry.sh, started and filled by
scripts/deploy-local.sh) and the release the local fleet's models make (built by that deploy, in build/releases).

In order (pytest runs the file top to bottom; each test leaves the fleet converged for the next):
a fresh fleet deployed with site.yml passes the smoke test through the load balancer; a second run changes nothing;
a bad swarm inventory and a start-first order without a free node are refused by name; a worker killed under load
has its task started on another node and the load balancer loses no request; a rolling update to a new release
under load loses none; a release that cannot load is rolled back by the swarm itself, losing none; 2 -> 4 replicas
by one variable and the load balancer serves from all four. (Check mode in swarm mode is not run here, for CI
time: docs/SWARM.md.) The fleet is removed at the end
(TRITONFLEET_KEEP_SWARM=1 keeps it; TRITONFLEET_REUSE_SWARM=1 then starts from it instead of a fresh one, for work on
the later tests).

The load runs at reduced scale (USERS closed-loop users through the load balancer, over TLS, with the load
generator of the benchmark); docs/SWARM.md has the figures at 200 users.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import fleetlib
import pytest
import yaml
from fleetlib import (
    CA_FILE,
    ROOT,
    VENV_BIN,
    Load,
    ansible_playbook,
    host_address,
    inventory_group,
    load_texts,
    playbook_env,
)

from tritonfleet.bench.chaos import balancer_rows, balancer_stats, new_release
from tritonfleet.release import Release, deployed

USES_LOCAL_FLEET = False  # conftest.py: this module makes its own fleet

INVENTORY = ROOT / "inventories" / "swarm-local"
#: scripts/fleet.sh and scripts/smoke-fleet.sh for this fleet (its inventory says the rest: hosts, network, keys).
FLEET_ENV = {"TRITONFLEET_INVENTORY": "inventories/swarm-local"}
RECORD = ROOT / "build" / "deployed" / "swarm-local.json"
REGISTRY = "172.30.0.1:5000"
NODES = inventory_group("triton_servers", INVENTORY)  # the nodes that may run Triton
MANAGER = inventory_group("swarm_managers", INVENTORY)[0]
BALANCER = inventory_group("load_balancers", INVENTORY)[0]
SERVICE = "tritonfleet_tritonserver"  # the triton_server role's stack and service names
#: The failure tests' users (fleetlib.USERS); TRITONFLEET_SWARM_USERS=200 gives the full-scale figures of docs/SWARM.md.
USERS = int(os.environ.get("TRITONFLEET_SWARM_USERS", fleetlib.USERS))
#: monitoring.yml is not adapted to swarm mode (docs/SWARM.md): the swarm runs leave it out.
SKIP_MONITORING = ("--skip-tags", "monitoring")


# --- helpers -----------------------------------------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, check=check,
                          env=playbook_env() | (env or {}))


def on_manager(*args: str) -> str:
    """`docker ARGS` on the swarm manager's engine."""
    return run("docker", "exec", MANAGER, "docker", *args).stdout.strip()


def service() -> dict:
    return json.loads(on_manager("service", "inspect", SERVICE))[0]


def running_tasks() -> dict[str, str]:
    """node -> task id of the service's tasks that should run and do."""
    lines = on_manager("service", "ps", "--filter", "desired-state=running", "--format",
                       "{{.Node}} {{.CurrentState}} {{.ID}}", SERVICE).splitlines()
    return {line.split()[0]: line.split()[-1] for line in lines if line.split()[1] == "Running"}


def node_states() -> dict[str, str]:
    lines = on_manager("node", "ls", "--format",
                       "{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}").splitlines()
    return {line.split()[0]: " ".join(line.split()[1:]) for line in lines}


def backend_servers(backend: str = "triton_grpc") -> dict[str, dict[str, str]]:
    """HAProxy's stats of one backend's servers: name -> row of the stats CSV (status, stot, ...)."""
    return balancer_stats(host_address(BALANCER), backend)


def grpc_requests() -> dict[str, int]:
    """The gRPC requests each server has had from the load balancer: over the server-wide backend and each model's."""
    counts: dict[str, int] = {}
    for row in balancer_rows(host_address(BALANCER)):
        if row["pxname"] == "triton_grpc" or row["pxname"].startswith("triton_grpc_"):
            counts[row["svname"]] = counts.get(row["svname"], 0) + int(row["stot"])
    return counts


def up_servers() -> set[str]:
    return {name for name, row in backend_servers().items() if row["status"] == "UP"}


def wait_for(what: str, condition, seconds: float, interval: float = 1.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {seconds:.0f} s")


def smoke_through_balancer(release: Path) -> subprocess.CompletedProcess[str]:
    return run(str(VENV_BIN / "tritonfleet"), "smoke-test", "--url", f"{host_address(BALANCER)}:8001", "--public",
               "--ca-file", str(CA_FILE), "--release", str(release), env={"no_proxy": "*", "NO_PROXY": "*"},
               check=False)


def swarm_playbook(playbook: str, *args: str, log_name: str):
    return ansible_playbook(playbook, *args, inventory=[INVENTORY], log_name=f"swarm-{log_name}")


def changed_hosts(run_) -> dict[str, int]:
    return {host: counts["changed"] for host, counts in run_.recap.items() if counts["changed"]}


def unloadable_release(good: Release, folder: Path) -> Release:
    """A release Triton cannot load: the models of `good` (same names, so the load balancer lets the same models
    through), sealed with the project's release code, each model's configuration unparseable. tritonserver exits at
    start (every model must load)."""
    path = folder / "unloadable"
    for model in good.names():
        (path / model).mkdir(parents=True)
        (path / model / "config.pbtxt").write_text(f'name: "{model}"\nthis is not a model configuration\n')
    out = run(str(VENV_BIN / "python"), str(ROOT / "tests" / "support" / "make_release.py"), str(path),
              *[arg for model in good.names() for arg in ("--model", model)]).stdout
    return Release.open(Path(json.loads(out)["path"]))


# --- the fleet ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swarm_fleet():
    """A fresh swarm fleet; removed at the end."""
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://{REGISTRY}/v2/", timeout=5)
    except OSError as exc:
        pytest.fail(f"the local fleet's registry does not answer on {REGISTRY} ({exc}): run scripts/deploy-local.sh")
    if os.environ.get("TRITONFLEET_REUSE_SWARM") == "1":  # while working on a test: the fleet as it is (not fresh)
        run(str(ROOT / "scripts" / "fleet.sh"), "create", env=FLEET_ENV)
        yield
        return
    run(str(ROOT / "scripts" / "fleet.sh"), "destroy", env=FLEET_ENV)
    RECORD.unlink(missing_ok=True)
    start = time.monotonic()
    run(str(ROOT / "scripts" / "fleet.sh"), "create", env=FLEET_ENV)
    print(f"swarm fleet created in {time.monotonic() - start:.0f} s")
    yield
    if os.environ.get("TRITONFLEET_KEEP_SWARM") != "1":
        run(str(ROOT / "scripts" / "fleet.sh"), "destroy", env=FLEET_ENV)


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_texts(tmp_path_factory.mktemp("load"))


#: What the runs after a test must keep passing (-e), so that each test changes one thing.
EXTRA: list[str] = []


# --- deploy, idempotence, bad input -------------------------------------------------------------------------------


def test_a_fresh_swarm_fleet_deploys_and_passes_the_smoke_test_through_the_load_balancer(swarm_fleet):
    run_ = swarm_playbook("site.yml", *SKIP_MONITORING, log_name="site")
    assert run_.returncode == 0, run_.output[-4000:]
    assert "ROLLOUT STOPPED" not in run_.output
    # The swarm of the inventory: one manager, four workers, all ready.
    states = node_states()
    assert states == {MANAGER: "Ready Active Leader"} | dict.fromkeys(NODES, "Ready Active"), states
    # The service: 2 replicas on 2 of the nodes, each serving the release's folder read-only; its rollout settings.
    spec = service()["Spec"]
    release = deployed(RECORD)
    tasks = running_tasks()
    assert len(tasks) == 2 and set(tasks) <= set(NODES), tasks
    container = spec["TaskTemplate"]["ContainerSpec"]
    mounts = {m["Target"]: m for m in container["Mounts"]}
    assert mounts["/models"]["Source"].endswith(f"/releases/{release.id}") and mounts["/models"]["ReadOnly"]
    assert container["Healthcheck"]["Test"][:2] == ["CMD", "bash"]
    assert container["Labels"]["org.tritonfleet.release-id"] == release.id
    assert (spec["UpdateConfig"]["Order"], spec["UpdateConfig"]["FailureAction"]) == ("stop-first", "rollback")
    assert spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == 2 * 2**30
    assert {p["PublishMode"] for p in spec["EndpointSpec"]["Ports"]} == {"host"}
    # The load balancer found the two replicas by itself (health checks of the nodes' published ports).
    assert wait_for("both replicas UP at the load balancer", lambda: up_servers() == set(tasks), 30)
    smoke = smoke_through_balancer(release.path)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-2000:]
    printed = run(str(ROOT / "scripts" / "smoke-fleet.sh"), env=FLEET_ENV, check=False)
    assert printed.returncode == 0, printed.stdout[-3000:] + printed.stderr[-2000:]
    assert printed.stdout.count(f"release {release.id[:12]} ===") == 3, printed.stdout[-2000:]


def test_a_second_run_changes_nothing(swarm_fleet):
    run_ = swarm_playbook("site.yml", *SKIP_MONITORING, log_name="site-second-run")
    assert run_.returncode == 0, run_.output[-3000:]
    assert set(NODES + [MANAGER]) <= set(run_.recap), run_.recap
    assert changed_hosts(run_) == {}, f"a second site.yml run changed something: {changed_hosts(run_)}"


def test_the_managers_cluster_api_listens_on_its_advertised_address_only(swarm_fleet):
    listening = subprocess.run(["docker", "exec", MANAGER, "ss", "-ltnH", "sport = :2377"], check=True,
                               capture_output=True, text=True).stdout.split()
    assert [word for word in listening if word.endswith(":2377")] == [f"{fleetlib.host_address(MANAGER)}:2377"]


def test_the_join_tokens_are_not_printed_even_verbosely(swarm_fleet):
    token = on_manager("swarm", "join-token", "-q", "worker")
    assert token.startswith("SWMTKN-")
    run_ = swarm_playbook("prepare.yml", "--tags", "swarm", "-v", log_name="swarm-verbose")
    assert run_.returncode == 0, run_.output[-3000:]
    assert "SWMTKN-" not in run_.output


@pytest.mark.parametrize("port", [8000, 8001, 8002, 8003])
def test_a_node_refuses_a_host_outside_the_admitted_set_on_every_triton_port(swarm_fleet, port):
    """Swarm mode publishes the ports on every address of a node: the firewall is what closes them."""
    node = sorted(running_tasks())[0]
    with fleetlib.outsider_on(fleetlib.host_var(MANAGER, "tritonfleet_fleet_network", INVENTORY),
                              "tf-swarm-outsider") as outsider:
        assert fleetlib.connect_from(outsider, fleetlib.host_address(node), port) == "refused"
    assert fleetlib.connect_from(BALANCER, fleetlib.host_address(node), port) == "open"


def test_the_admin_key_is_on_no_command_line_and_in_no_service_spec(swarm_fleet):
    """The service spec (`docker service inspect` on a manager) and every process of a node that runs a task name
    the key file, never the key."""
    key = fleetlib.admin_key()
    spec = json.dumps(service())
    assert "${file:/run/secrets/tritonfleet-admin-key}" in spec and key not in spec
    for node in running_tasks():
        listing = run("docker", "exec", "-u", "deploy", node, "ps", "-eww", "-o", "args").stdout
        assert "--grpc-restricted-protocol=" in listing and key not in listing, node


def test_a_swarm_inventory_without_a_manager_is_refused(swarm_fleet, tmp_path):
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
    hosts["all"]["children"]["swarm_managers"]["hosts"] = {}
    inventory = tmp_path / "no-manager"
    shutil.copytree(INVENTORY / "group_vars", inventory / "group_vars", symlinks=False)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    run_ = ansible_playbook("validate.yml", inventory=[inventory], log_name="swarm-no-manager")
    assert run_.returncode != 0
    assert "the swarm needs a manager: at least one host in the group swarm_managers (has 0)" in run_.output


def test_start_first_without_a_free_node_is_refused_and_changes_nothing(swarm_fleet):
    before = service()["Version"]["Index"]
    run_ = swarm_playbook("deploy.yml", "-e", "triton_server_swarm_replicas=4", "-e",
                          "triton_server_swarm_update_order=start-first", log_name="start-first-without-free-node")
    assert run_.returncode != 0
    assert "start-first starts each new task on a node without one, so it needs replicas + update" in run_.output
    assert service()["Version"]["Index"] == before


# --- failures and rollouts under load ----------------------------------------------------------------------------


def test_a_worker_killed_under_load_has_its_task_started_elsewhere_and_loses_no_request(swarm_fleet, texts):
    before = running_tasks()
    victim = sorted(before)[0]
    load = Load(USERS, 1800, texts, target=f"{host_address(BALANCER)}:8001")
    try:
        time.sleep(10)
        killed = time.monotonic()
        run("docker", "kill", victim)
        moved = wait_for(f"the task of {victim} running on another node",
                         lambda: (tasks := running_tasks()) and len(tasks) == 2 and victim not in tasks and tasks, 180)
        rescheduled = time.monotonic() - killed
        wait_for("the new replica UP at the load balancer", lambda: up_servers() == set(moved), 60)
        served = time.monotonic() - killed
        time.sleep(5)
    finally:
        result = load.stop()
    print(f"killed {victim}: its task ran again on {sorted(set(moved) - set(before))} after {rescheduled:.0f} s, "
          f"UP at the load balancer after {served:.0f} s; node states {node_states()}")
    try:
        assert result["sent_total"] > 100, result
        assert (result["errors_total"], result["error_statuses"]) == (0, {}), result["error_samples"]
    finally:
        # The host comes back (its engine rejoins the swarm by itself); the tasks stay where they are.
        run(str(ROOT / "scripts" / "fleet.sh"), "create", env=FLEET_ENV)
        wait_for(f"{victim} ready in the swarm again", lambda: node_states().get(victim) == "Ready Active", 180, 2)


def test_a_rolling_update_to_a_new_release_under_load_loses_no_request(swarm_fleet, texts, tmp_path):
    good = deployed(RECORD)
    update = new_release(good, tmp_path, "update")
    extra = ["-e", json.dumps({"model_conversion_release": update.as_json()})]
    load = Load(USERS, 1800, texts, target=f"{host_address(BALANCER)}:8001")
    run_ = swarm_playbook("deploy.yml", *extra, "-e", "triton_server_swarm_update_order=start-first",
                          log_name="rolling-update")
    result = load.stop()
    assert run_.returncode == 0, run_.output[-4000:]
    EXTRA[:] = extra
    status = service()
    assert status["UpdateStatus"]["State"] == "completed", status["UpdateStatus"]
    assert status["Spec"]["UpdateConfig"]["Order"] == "start-first"
    assert status["Spec"]["Labels"]["org.tritonfleet.release-id"] == update.id
    assert deployed(RECORD).id == update.id
    assert smoke_through_balancer(update.path).returncode == 0
    assert result["sent_total"] > 100, result
    assert (result["errors_total"], result["error_statuses"]) == (0, {}), result["error_samples"]


def test_a_release_that_cannot_load_is_rolled_back_by_the_swarm(swarm_fleet, texts, tmp_path):
    good = deployed(RECORD)
    broken = unloadable_release(good, tmp_path)
    load = Load(USERS, 1800, texts, target=f"{host_address(BALANCER)}:8001")
    run_ = swarm_playbook("deploy.yml", *EXTRA, "-e", json.dumps({"model_conversion_release": broken.as_json()}),
                          log_name="unloadable-release")
    result = load.stop()
    assert run_.returncode != 0
    assert f"SWARM ROLLED BACK the service {SERVICE}: release {broken.id[:12]} did not get healthy" in run_.output
    assert f"ROLLOUT STOPPED (swarm): release {broken.id[:12]}" in run_.output
    assert f"rolled back to release {good.id[:12]}, which passes its smoke test on every replica" in run_.output
    # The swarm's own rollback, as the role read it (the rescue's deploy of the good release then changes no task).
    assert "(update rollback_completed: rollback completed)" in run_.output
    status = service()
    assert status["Spec"]["Labels"]["org.tritonfleet.release-id"] == good.id
    assert len(running_tasks()) == 2
    # Every node serves (and says it serves) the good release again; the fleet's record never named the broken one.
    assert {node: deployed(RECORD, node).id for node in NODES} == dict.fromkeys(NODES, good.id)
    assert deployed(RECORD).id == good.id
    assert smoke_through_balancer(good.path).returncode == 0
    assert result["sent_total"] > 100, result
    assert (result["errors_total"], result["error_statuses"]) == (0, {}), result["error_samples"]


def test_scaling_to_4_replicas_by_one_variable_serves_from_all_4(swarm_fleet, texts):
    run_ = swarm_playbook("deploy.yml", *EXTRA, "-e", "triton_server_swarm_replicas=4", log_name="scale-to-4")
    assert run_.returncode == 0, run_.output[-4000:]
    EXTRA.extend(["-e", "triton_server_swarm_replicas=4"])
    assert set(running_tasks()) == set(NODES)
    # The load balancer's configuration did not change: it finds the new replicas on the nodes' published ports.
    assert wait_for("4 replicas UP at the load balancer", lambda: up_servers() == set(NODES), 60)
    before = grpc_requests()
    result = Load(USERS, 15, texts, target=f"{host_address(BALANCER)}:8001").result()
    served = {name: count - before[name] for name, count in grpc_requests().items()}
    print(f"requests per server over 15 s at {USERS} users: {served}")
    assert result["errors_total"] == 0, result["error_samples"]
    assert set(served) == set(NODES) and min(served.values()) > 0, served
