"""ansible-playbook against the deployed local fleet: idempotence, check mode, going back to an earlier release,
bad input, a failed rollout.

Order matters (pytest runs the file top to bottom): the converged-fleet tests first, then the release that is
replaced and deployed again, the failed rollout and the run that converges the fleet again, last the host that
dies mid-deploy (which brings it back and converges).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from fleetlib import (
    CONVERSION_HOST,
    INVENTORY,
    RECORD,
    ROOT,
    SERVERS,
    USERS,
    Load,
    PlaybookRun,
    Poller,
    ansible_playbook,
    balancer_config,
    bring_back,
    fleet_docker,
    grpc_status,
    host_address,
    lb_channel,
    load_texts,
    playbook_command,
    playbook_env,
    rolling_play,
    save_log,
    smoke_test,
)
from tritonclient.grpc import service_pb2

from tritonfleet.bench.chaos import new_release
from tritonfleet.release import Release, deployed


def ready(host: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host_address(host)}:8000/v2/health/ready", timeout=10) as response:
            return response.status
    except OSError:
        return 0


def triton_container(host: str) -> dict:
    return json.loads(fleet_docker(host, "inspect", "tritonserver"))[0]


def fleet_release() -> Release:
    """The release the deploy record says the whole fleet serves."""
    return deployed(RECORD)


def current_release_id(host: str) -> str:
    """The id of the release a host's `current` link names."""
    return Path(fleet_docker_exec(host, "readlink", "/opt/tritonfleet/model_repository/current")).name


def fleet_docker_exec(host: str, *args: str) -> str:
    return subprocess.run(["docker", "exec", host, *args], check=True, capture_output=True, text=True).stdout.strip()


# --- a converged fleet -------------------------------------------------------------------------------------


def test_second_site_run_changes_nothing():
    run = ansible_playbook("site.yml", log_name="site-second-run")
    assert run.returncode == 0, run.output[-3000:]
    recap = run.recap
    assert set(SERVERS + [CONVERSION_HOST]) <= set(recap), recap
    changed = {host: counts["changed"] for host, counts in recap.items() if counts["changed"]}
    assert changed == {}, f"a second site.yml run changed something: {changed}"


def test_check_diff_on_converged_fleet_reports_no_changes():
    run = ansible_playbook("site.yml", "--check", "--diff", log_name="site-check-diff")
    assert run.returncode == 0, run.output[-3000:]
    changed = {host: counts["changed"] for host, counts in run.recap.items() if counts["changed"]}
    assert changed == {}, f"--check --diff reports changes: {changed}"


# --- a release replaced, then deployed again, under load -----------------------------------------------------

#: The model release Y adds: the sentiment demo model under another name (its conversion is cached).
ADDED = "mood"
#: Release Y: the inventory's models and ADDED, with another max_batch_size (a serving option).
OTHER_OPTIONS = json.dumps({
    "model_conversion_options": {**yaml.safe_load((INVENTORY / "group_vars" / "conversion_hosts.yml").read_text())[
        "model_conversion_options"], "max_batch_size": 16},
    "model_conversion_models": yaml.safe_load((INVENTORY / "group_vars" / "conversion_hosts.yml").read_text())[
        "model_conversion_models"] + [{"name": ADDED,
                                       "model": "{{ tritonfleet_project_dir }}/build/demo-models/sentiment"}]})


def admitted() -> list[str]:
    """The models the load balancer admits (its deployed HAProxy config's HTTP rule)."""
    rule = re.search(r"^\s*acl public_model path_reg \^/v2/models/\(([^)]*)\)", balancer_config(), re.M)
    assert rule, "the load balancer's config has no public model rule"
    return sorted(rule.group(1).split("|"))


def ready_through_the_balancer(model: str) -> str:
    return grpc_status(lb_channel(), "ModelReady", service_pb2.ModelReadyRequest(name=model))


#: The line that names the fleet lock's holder in the refusal of a second run (plugins/callback/tritonfleet_lock.py).
LOCK_MESSAGE = "Another ansible-playbook run holds the fleet lock"


def interrupted(playbook: str, *args: str, host: str, log_name: str) -> tuple[PlaybookRun, PlaybookRun]:
    """`playbook` with `args`, Ctrl-C'd (SIGINT to its process group, as a terminal sends it) at the worst point of a
    rollout: `host`'s Triton container has just been recreated on the new release, drained, before its smoke test
    and its activation. At that point a second, plain site.yml is tried first. Returns both runs."""
    cmd = playbook_command(playbook, *args)
    lines: list[str] = []
    second = None
    start = time.monotonic()
    with subprocess.Popen(cmd, cwd=ROOT, env=playbook_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True) as proc:
        assert proc.stdout is not None
        in_rollout = running = armed = False
        rollout = rolling_play()
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("PLAY ["):
                in_rollout = line.startswith(f"PLAY [{rollout}]")
            # The rollout's "Run the Triton server" step, then its container task (the step before, predict.yml,
            # runs the same task in check mode).
            running = running or (in_rollout and line.startswith("TASK [Run the Triton server] "))
            if running and re.match(rf"included: \S+/roles/triton_server/tasks/container\.yml for {host}$", line):
                armed = True
            if armed and second is None and line.startswith(f"changed: [{host}]"):
                second = ansible_playbook("site.yml", log_name=f"{log_name}-second-run")
                os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait()
    run = PlaybookRun(cmd, returncode, "".join(lines), time.monotonic() - start)
    save_log(log_name, run)
    assert second is not None, f"the rollout never restarted {host}'s Triton: {run.output[-3000:]}"
    return run, second


def started(host: str) -> float:
    """When `host`'s Triton container last started (Unix seconds)."""
    stamp = triton_container(host)["State"]["StartedAt"]  # RFC 3339 with nanoseconds: keep the microseconds
    return datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def revert(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Release X (the inventory's), then Y, then X again: each rollout under USERS users through the load
    balancer, and ADDED's inference through it every half second. The way to Y is a site.yml run Ctrl-C'd at the
    worst point of its rollout (and a second site.yml tried then), and the same site.yml run again. Returns the
    releases, the runs, the loads and ADDED's calls."""
    texts = load_texts(tmp_path_factory.mktemp("load"))
    x = fleet_release()
    first = SERVERS[0]
    load, added = Load(USERS, 1800, texts), Poller(ADDED)
    cut, second = interrupted("site.yml", "-e", OTHER_OPTIONS, host=first, log_name="revert-1-site-y-interrupted")
    at_cut = {"container": triton_container(first)["Config"]["Labels"]["org.tritonfleet.release-id"],
              "current": current_release_id(first), "record": deployed(RECORD, first).id}
    admitted_at_cut = {"config": admitted(), ADDED: ready_through_the_balancer(ADDED)}
    rerun = ansible_playbook("site.yml", "-e", OTHER_OPTIONS, log_name="revert-2-site-y-again")
    to_y, added_to_y = load.stop(), added.stop()
    assert rerun.returncode == 0, rerun.output[-3000:]
    admitted_on_y = {"config": admitted(), ADDED: ready_through_the_balancer(ADDED)}
    y = fleet_release()
    y_ids = {host: current_release_id(host) for host in SERVERS}
    y_record = {host: deployed(RECORD, host).id for host in SERVERS}
    y_containers = {host: triton_container(host)["Config"]["Labels"]["org.tritonfleet.release-id"]
                    for host in SERVERS}
    y_started = {host: started(host) for host in SERVERS}
    load, added = Load(USERS, 1800, texts), Poller(ADDED)
    run = ansible_playbook("deploy.yml", log_name="revert-3-deploy-x-again")
    back_to_x, added_to_x = load.stop(), added.stop()
    assert run.returncode == 0, run.output[-3000:]
    admitted_on_x = {"config": admitted(), ADDED: ready_through_the_balancer(ADDED)}
    return {"x": x, "y": y, "y_ids": y_ids, "y_record": y_record, "y_containers": y_containers, "cut": cut,
            "second": second, "at_cut": at_cut, "rerun": rerun, "loads": {"X to Y": to_y, "Y to X": back_to_x},
            "admitted": {"at the cut": admitted_at_cut, "on Y": admitted_on_y, "back on X": admitted_on_x},
            "added": {"X to Y": added_to_y, "Y to X": added_to_x},
            "started": {"on Y": y_started, "back on X": {host: started(host) for host in SERVERS}}}


def statuses(calls) -> str:
    """The statuses of a Poller's calls, each run of one status once: "PERMISSION_DENIED UNAVAILABLE OK"."""
    names = [call.status for call in calls]
    return " ".join(name for i, name in enumerate(names) if i == 0 or names[i - 1] != name)


def test_the_load_balancer_routes_a_model_only_to_servers_that_serve_it(revert):
    """Y adds a model. It is admitted from the start of Y's rollout, but no server of the rotation may get it before
    it serves it: at the cut (the first server drained on Y, the others on X) it is UNAVAILABLE, not sent to a server
    without it; on Y it is served; back on X, where no server serves it, it is refused again."""
    x_models = sorted(revert["x"].names())
    y_models = sorted([*x_models, ADDED])
    assert revert["admitted"] == {"at the cut": {"config": y_models, ADDED: "StatusCode.UNAVAILABLE"},
                                  "on Y": {"config": y_models, ADDED: "StatusCode.OK"},
                                  "back on X": {"config": x_models, ADDED: "StatusCode.PERMISSION_DENIED"}}


def test_an_added_model_is_served_by_the_first_server_that_took_it_before_the_rollout_ends(revert):
    """X to Y, ADDED's inference every half second: refused until the load balancer admits it, unavailable while no
    server in the rotation serves it, then served, answered by a server that has it every time (a server without it
    would say the model is unknown), from before the last server restarted on Y."""
    calls = revert["added"]["X to Y"]
    assert statuses(calls) == "PERMISSION_DENIED UNAVAILABLE OK", \
        [(call.status, call.details) for call in calls if call.status != "OK"][-5:]
    first_ok = next(call.at for call in calls if call.status == "OK")
    assert first_ok < revert["started"]["on Y"][SERVERS[-1]], (first_ok, revert["started"]["on Y"])


def test_a_dropped_model_stays_served_by_the_servers_not_yet_on_the_release(revert):
    """Y to X drops ADDED: every call answered while a server in the rotation still serves it, after the first
    server restarted on X too; then unavailable, and refused once the rollout is done. Before the routing by model
    it was refused from the start of the rollout."""
    calls = revert["added"]["Y to X"]
    assert statuses(calls) in ("OK UNAVAILABLE PERMISSION_DENIED", "OK PERMISSION_DENIED"), \
        [(call.status, call.details) for call in calls if call.status != "OK"][:5]
    last_ok = max(call.at for call in calls if call.status == "OK")
    assert last_ok > revert["started"]["back on X"][SERVERS[0]], (last_ok, revert["started"]["back on X"])


def test_a_second_run_during_a_rollout_stops_at_once_with_the_lock_message(revert):
    second, cut = revert["second"], revert["cut"]
    assert second.returncode == 1, second.output[-3000:]
    assert f"{LOCK_MESSAGE} {INVENTORY.resolve() / '.tritonfleet.lock'} (pid " in second.output, second.output
    assert "PLAY [" not in second.output
    assert second.seconds < 30, second.seconds
    assert cut.returncode != 0


def test_a_rollout_interrupted_before_a_smoke_test_activates_and_records_nothing_untested(revert):
    """At the cut, the first server's container runs Y (untested, drained), while its `current` link and the deploy
    record still name X, the release it passed its smoke test with."""
    x, y = revert["x"], revert["y"]
    assert revert["at_cut"] == {"container": y.id, "current": x.id, "record": x.id}


def test_the_rerun_after_the_interrupt_smoke_tests_activates_and_records_y_on_every_host(revert):
    """The rerun finds the first server on Y but not activated, so it smoke-tests it before activating it (the
    gate: a restart, or an active release that is another one); every host ends on Y, tested, and recorded."""
    y, rerun = revert["y"], revert["rerun"]
    rollout = rerun.output[rerun.output.index(f"PLAY [{rolling_play()}]"):]
    for host in SERVERS:
        assert re.search(rf"TASK \[smoke_test : Remember the release this target passed with in this run\][^\n]*\n"
                         rf"ok: \[{host}\]", rollout), f"{host} was not smoke-tested in the rerun"
    assert revert["y_ids"] == revert["y_record"] == revert["y_containers"] == dict.fromkeys(SERVERS, y.id)


def test_rolling_deploys_under_load_lose_no_request(revert):
    """Each server is drained at the load balancer before its Triton restarts and put back after its smoke test."""
    failed = {name: (load["errors_total"], load["error_statuses"]) for name, load in revert["loads"].items()}
    assert all(load["sent_total"] > 100 for load in revert["loads"].values()), revert["loads"]
    assert failed == {"X to Y": (0, {}), "Y to X": (0, {})}


def test_redeploying_an_earlier_release_serves_and_checks_that_release(revert):
    """After X, Y, X the deploy record, each host's `current` link, testinfra and the printed smoke tests all name
    X. (Before the release contract the newest files on the controller were taken for "the deployed release":
    after this sequence 6 testinfra checks compared the fleet with Y.)"""
    x, y = revert["x"], revert["y"]
    assert y.key != x.key and y.id != x.id
    assert {m.options["max_batch_size"] for m in y.models} == {16}
    assert revert["y_ids"] == dict.fromkeys(SERVERS, y.id)
    assert fleet_release().id == x.id
    assert {host: deployed(RECORD, host).id for host in SERVERS} == dict.fromkeys(SERVERS, x.id)
    assert {host: current_release_id(host) for host in SERVERS} == dict.fromkeys(SERVERS, x.id)
    # The y release's files are the newest on the controller: nothing may take them for what is served.
    assert y.path.stat().st_mtime >= x.path.stat().st_mtime

    infra = subprocess.run([str(ROOT / ".venv" / "bin" / "pytest"), "-p", "no:cacheprovider", "-q", "-m", "deploy",
                            "tests/infra", "--hosts=ansible://triton_servers", f"--ansible-inventory={INVENTORY}"],
                           cwd=ROOT, capture_output=True, text=True, env=playbook_env())
    assert infra.returncode == 0, infra.stdout[-3000:]
    printed = subprocess.run([str(ROOT / "scripts" / "smoke-fleet.sh")], cwd=ROOT, capture_output=True, text=True,
                             env=playbook_env())
    assert printed.returncode == 0, printed.stdout[-3000:] + printed.stderr[-2000:]
    assert printed.stdout.count(f"release {x.id[:12]} ===") == len(SERVERS) + 1, printed.stdout[-2000:]
    assert y.id[:12] not in printed.stdout


# --- a daemon.json change on the servers ---------------------------------------------------------------------


def engine_started(host: str) -> str:
    return fleet_docker_exec(host, "systemctl", "show", "docker", "-p", "ExecMainStartTimestampMonotonic")


def triton_started(host: str) -> str:
    return triton_container(host)["State"]["StartedAt"]


@pytest.mark.parametrize("uploads", [4, 5])
def test_a_daemon_json_change_restarts_every_engine_and_stops_no_triton_server(uploads, tmp_path: Path):
    """prepare.yml with another daemon.json option (max-concurrent-uploads, then back to Docker's default 5), under
    load: every server's engine restarts (one host at a time), with live-restore its Triton keeps running, and the
    load balancer loses no request."""
    engines = {host: engine_started(host) for host in SERVERS}
    tritons = {host: triton_started(host) for host in SERVERS}
    load = Load(USERS, 600, load_texts(tmp_path))
    options = json.dumps({"docker_daemon_options": {"max-concurrent-uploads": uploads}})
    run = ansible_playbook("prepare.yml", "-e", options, log_name=f"prepare-daemon-json-{uploads}")
    result = load.stop()
    assert run.returncode == 0, run.output[-3000:]
    assert re.search(r"RUNNING HANDLER \[docker : Restart Docker\]", run.output), run.output[-3000:]
    assert {host: engine_started(host) != engines[host] for host in SERVERS} == dict.fromkeys(SERVERS, True)
    assert {host: triton_started(host) for host in SERVERS} == tritons
    assert result["sent_total"] > 100 and (result["errors_total"], result["error_statuses"]) == (0, {}), result


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.fixture
def inventory_copy(tmp_path: Path) -> Path:
    """A copy of the local inventory that a test may break."""
    copy = tmp_path / "inventory"
    subprocess.run(["cp", "-r", str(INVENTORY), str(copy)], check=True)
    return copy


@pytest.mark.parametrize(
    ("group_file", "variable"),
    [("triton_servers", "triton_server_image_source"), ("load_balancers", "load_balancer_grpc_port")],
)
def test_missing_variable_fails_validation_naming_it_and_the_host(inventory_copy: Path, group_file, variable):
    path = inventory_copy / "group_vars" / f"{group_file}.yml"
    data = yaml.safe_load(path.read_text())
    del data[variable]
    path.write_text(yaml.safe_dump(data))
    run = ansible_playbook("site.yml", inventory=[inventory_copy], log_name=f"missing-{variable}")
    assert run.returncode != 0
    host = SERVERS[0] if group_file == "triton_servers" else CONVERSION_HOST
    assert f"{host}: the variable {variable} is required" in run.output
    assert "PLAY [Validate the inventory]" in run.output
    assert "PLAY [Install Docker" not in run.output, "the run went on after the validation failed"


def test_invalid_port_fails_validation_naming_the_host(tmp_path: Path):
    overlay = tmp_path / "overlay.yml"
    host_vars = {"tf-server-2": {"triton_server_grpc_port": 8000}}
    overlay.write_text(yaml.safe_dump({"triton_servers": {"hosts": host_vars}}))
    run = ansible_playbook("validate.yml", inventory=[INVENTORY, overlay], log_name="duplicate-port")
    assert run.returncode != 0
    assert "tf-server-2: the ports" in run.output
    assert "triton_server_grpc_port=8000" in run.output


def test_a_triton_image_named_by_a_tag_only_is_refused_before_any_server_changes(tmp_path: Path):
    """A tag can be pushed again: the servers pull the Triton image by its digest, and refuse a name without one
    in the staging play, before the rollout drains anything."""
    image = triton_container(SERVERS[0])["Config"]["Labels"]["org.tritonfleet.image"]
    assert re.search(r":[^/@]+@sha256:[0-9a-f]{64}$", image), f"the servers run {image}, not a tag by its digest"
    tag_only = image.split("@")[0]
    containers = {host: triton_container(host)["Id"] for host in SERVERS}
    run = ansible_playbook("deploy.yml", "-e", f"triton_server_image={tag_only}", log_name="image-tag-only")
    assert run.returncode != 0
    assert f"the Triton image {tag_only} is not named by its digest" in run.output, run.output[-3000:]
    assert f"PLAY [{rolling_play()}]" not in run.output
    assert {host: triton_container(host)["Id"] for host in SERVERS} == containers


def overlay_inventory(tmp_path: Path, host: str, group: str = "triton_servers", **host_vars) -> Path:
    """An inventory that adds or changes one host's variables on top of the local one."""
    overlay = tmp_path / "overlay.yml"
    overlay.write_text(yaml.safe_dump({group: {"hosts": {host: host_vars}}}))
    return overlay


def fresh_connections() -> dict[str, str]:
    """A run that opens its own SSH connections: the connections an earlier run left open (ControlPersist) are
    already past the host key and login checks. (A short folder: a socket's path has at most 107 bytes.)"""
    return {"ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(prefix="tf-cp-", dir="/tmp")}


def stopped_at_the_door(run: PlaybookRun) -> bool:
    """The run stopped in the validation: no play after it began."""
    return (run.returncode != 0 and "PLAY [Validate the inventory]" in run.output
            and "PLAY [Install Docker" not in run.output)


def test_unreachable_host_is_reported_by_name(tmp_path: Path):
    overlay = overlay_inventory(tmp_path, "tf-server-9", ansible_host="172.30.0.99")
    run = ansible_playbook("site.yml", inventory=[INVENTORY, overlay], log_name="unreachable-host")
    assert "tf-server-9 is UNREACHABLE (ansible_host=172.30.0.99, connection ssh)" in run.output
    assert stopped_at_the_door(run), "the run went on with an unreachable host"


def other_host_key(tmp_path: Path) -> str:
    """The public half of a new ed25519 key: the host key of a host that is not the one pinned."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    return " ".join((tmp_path / "other.pub").read_text().split()[:2])


@pytest.mark.parametrize("case", ["unknown", "changed"])
def test_a_host_key_that_is_not_the_pinned_one_stops_the_run_before_anything_changes(tmp_path: Path, case):
    host = SERVERS[0]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("" if case == "unknown" else f"{host_address(host)} {other_host_key(tmp_path)}\n")
    overlay = overlay_inventory(tmp_path, host, ansible_ssh_common_args=f"-o UserKnownHostsFile={known_hosts}")
    run = ansible_playbook("site.yml", inventory=[INVENTORY, overlay], env=fresh_connections(),
                           log_name=f"host-key-{case}")
    assert f"{host}: its SSH host key is not the one pinned in {known_hosts} (unknown or changed)" in run.output
    assert stopped_at_the_door(run), run.output[-3000:]


def test_a_client_key_the_hosts_do_not_know_stops_the_run(tmp_path: Path):
    host = SERVERS[0]
    other_host_key(tmp_path)  # a key pair of the controller's that no host authorizes
    overlay = overlay_inventory(tmp_path, host, ansible_ssh_private_key_file=str(tmp_path / "other"))
    run = ansible_playbook("site.yml", inventory=[INVENTORY, overlay], env=fresh_connections(),
                           log_name="client-key-unknown")
    assert f"{host}: SSH refused the login of deploy with the key {tmp_path / 'other'}" in run.output
    assert stopped_at_the_door(run), run.output[-3000:]


@pytest.fixture
def user_without_sudo() -> str:
    """A login user on the first server with the fleet's authorized key and no sudo rule (removed afterwards)."""
    host, user = SERVERS[0], "tf-nosudo"
    fleet_docker_exec(host, "sh", "-c", f"id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}; "
                      f"mkdir -p /home/{user}/.ssh && cp /home/deploy/.ssh/authorized_keys /home/{user}/.ssh/ "
                      f"&& chown -R {user}: /home/{user}/.ssh")
    yield user
    # Its sessions first (a connection Ansible keeps open), or userdel refuses.
    fleet_docker_exec(host, "sh", "-c", f"pkill -KILL -u {user}; userdel --remove {user}")


def test_a_login_user_without_sudo_stops_the_run(tmp_path: Path, user_without_sudo: str):
    host = SERVERS[0]
    overlay = overlay_inventory(tmp_path, host, ansible_user=user_without_sudo)
    run = ansible_playbook("site.yml", inventory=[INVENTORY, overlay], env=fresh_connections(),
                           log_name="login-user-without-sudo")
    assert f"{host}: the login user {user_without_sudo} cannot become root with sudo without a password" in run.output
    assert stopped_at_the_door(run), run.output[-3000:]


# A smoke-test mismatch that stops the rollout (and rolls the host back) is test_hardening.py's broken release.


# --- a host that dies mid-deploy ---------------------------------------------------------------------------


def rollout_struck(dying: str, fault: list[str], *args: str, log_name: str) -> PlaybookRun:
    """deploy.yml with `args`; `fault` (a command) runs as soon as `dying`'s own rollout has begun (its first result
    in the rolling play)."""
    cmd = playbook_command("deploy.yml", *args)
    lines: list[str] = []
    struck = False
    start = time.monotonic()
    with subprocess.Popen(cmd, cwd=ROOT, env=playbook_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        assert proc.stdout is not None
        in_rollout = False
        rollout = rolling_play()
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("PLAY ["):
                in_rollout = line.startswith(f"PLAY [{rollout}]")
            if in_rollout and not struck and f"[{dying}]" in line:
                subprocess.run(fault, check=True, capture_output=True)
                struck = True
        returncode = proc.wait()
    run = PlaybookRun(cmd, returncode, "".join(lines), time.monotonic() - start)
    save_log(log_name, run)
    assert struck, "the rollout never reached the host"
    return run


def test_a_host_that_dies_mid_deploy_is_named_and_a_rerun_recovers():
    """A change is rolled out and the second server dies (its container is killed) while its own rollout runs.
    The run fails naming that host, the first server keeps serving what it took, and once the host is back a
    plain deploy converges the fleet: every server passes its smoke test again."""
    dying = SERVERS[1]
    run = rollout_struck(dying, ["docker", "kill", dying], "-e", "triton_server_log_verbose=1",
                         log_name="host-dies-mid-deploy")
    try:
        assert run.returncode != 0
        assert re.search(rf"fatal: \[{dying}\]: UNREACHABLE!", run.output), run.output[-3000:]
        assert run.recap[dying]["unreachable"] == 1, run.recap
        # The first host finished its rollout (with the change) and keeps serving.
        assert "--log-verbose=1" in triton_container(SERVERS[0])["Args"]
        assert ready(SERVERS[0]) == 200
        smoke = smoke_test(SERVERS[0], fleet_release().path)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    finally:
        # Bring the host back whatever happened above, so the fleet is left converged.
        bring_back(dying)
        converged = ansible_playbook("deploy.yml", log_name="deploy-after-host-died")
    assert converged.returncode == 0, converged.output[-3000:]
    for host in SERVERS:
        assert ready(host) == 200, host
        assert "--log-verbose=1" not in triton_container(host)["Args"], host
        smoke = smoke_test(host, fleet_release().path)
        assert smoke.returncode == 0, f"{host}: {smoke.stdout}{smoke.stderr}"


def test_sshd_dying_mid_rollout_stops_it_and_the_record_names_what_each_host_serves(tmp_path: Path):
    """A new release is rolled out; as the second server's rollout begins, its sshd dies (stopped, and the sessions
    Ansible holds open killed). The rollout stops naming that host; the first host serves the new release, which
    it passed its smoke test with; the second still serves the release it had; and the deploy record says exactly
    that, host by host. Once sshd is back, a plain deploy converges the fleet."""
    first, dying = SERVERS[0], SERVERS[1]
    old = fleet_release()
    new = new_release(old, tmp_path, "sshd")
    kill_sshd = ["docker", "exec", dying, "sh", "-c", "systemctl stop ssh; pkill -KILL -x sshd; true"]
    run = rollout_struck(dying, kill_sshd, "-e", json.dumps({"model_conversion_release": new.as_json()}),
                         log_name="sshd-dies-mid-rollout")
    try:
        assert run.returncode != 0
        assert re.search(rf"fatal: \[{dying}\]: UNREACHABLE!", run.output), run.output[-3000:]
        served = {host: triton_container(host)["Config"]["Labels"]["org.tritonfleet.release-id"] for host in SERVERS}
        assert served == {first: new.id, dying: old.id}
        assert {host: deployed(RECORD, host).id for host in SERVERS} == served
        assert smoke_test(first, new.path).returncode == 0
        assert smoke_test(dying, old.path).returncode == 0
        assert deployed(RECORD).id == old.id, "the record says the whole fleet took a release it did not"
    finally:
        fleet_docker_exec(dying, "systemctl", "start", "ssh")
        converged = ansible_playbook("deploy.yml", log_name="deploy-after-sshd-died")
    assert converged.returncode == 0, converged.output[-3000:]
    assert {host: deployed(RECORD, host).id for host in SERVERS} == dict.fromkeys(SERVERS, old.id)
