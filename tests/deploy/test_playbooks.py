"""ansible-playbook against the deployed local fleet: idempotence, check mode, going back to an earlier release,
bad input, a failed rollout.

Order matters (pytest runs the file top to bottom): the converged-fleet tests first, then the release that is
replaced and deployed again, the failed rollout and the run that converges the fleet again, last the host that
dies mid-deploy (which brings it back and converges).
"""

from __future__ import annotations

import json
import re
import subprocess
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
    ansible_playbook,
    bring_back,
    fleet_docker,
    host_address,
    load_texts,
    playbook_command,
    playbook_env,
    rolling_play,
    save_log,
    smoke_test,
)

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

#: Release Y: another max_batch_size (a serving option: a new release from the cached conversions).
OTHER_OPTIONS = json.dumps({"model_conversion_options": {"max_batch_size": 16}})


@pytest.fixture(scope="module")
def revert(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Release X (the inventory's), then Y, then X again: each rollout under USERS users through the load
    balancer. Returns the releases and the loads."""
    texts = load_texts(tmp_path_factory.mktemp("load"))
    x = fleet_release()
    run = ansible_playbook("convert.yml", "-e", OTHER_OPTIONS, log_name="revert-1-convert-y")
    assert run.returncode == 0, run.output[-3000:]
    load = Load(USERS, 1800, texts)
    run = ansible_playbook("deploy.yml", "-e", OTHER_OPTIONS, log_name="revert-2-deploy-y")
    to_y = load.stop()
    assert run.returncode == 0, run.output[-3000:]
    y = fleet_release()
    y_ids = {host: current_release_id(host) for host in SERVERS}
    load = Load(USERS, 1800, texts)
    run = ansible_playbook("deploy.yml", log_name="revert-3-deploy-x-again")
    back_to_x = load.stop()
    assert run.returncode == 0, run.output[-3000:]
    return {"x": x, "y": y, "y_ids": y_ids, "loads": {"X to Y": to_y, "Y to X": back_to_x}}


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


def test_unreachable_host_is_reported_by_name(tmp_path: Path):
    overlay = tmp_path / "overlay.yml"
    overlay.write_text(
        yaml.safe_dump(
            {"triton_servers": {"hosts": {"tf-server-9": {"ansible_connection": "community.docker.docker"}}}}
        )
    )
    run = ansible_playbook(
        "site.yml", "-e", "tritonfleet_connect_timeout=5", inventory=[INVENTORY, overlay], log_name="unreachable-host"
    )
    assert run.returncode != 0
    assert "tf-server-9 is UNREACHABLE" in run.output
    assert "PLAY [Install Docker" not in run.output, "the run went on with an unreachable host"


# A smoke-test mismatch that stops the rollout (and rolls the host back) is test_hardening.py's broken release.


# --- a host that dies mid-deploy ---------------------------------------------------------------------------


def test_a_host_that_dies_mid_deploy_is_named_and_a_rerun_recovers():
    """A change is rolled out and the second server dies (its container is killed) while its own rollout runs.
    The run fails naming that host, the first server keeps serving what it took, and once the host is back a
    plain deploy converges the fleet: every server passes its smoke test again."""
    dying = SERVERS[1]
    cmd = playbook_command("deploy.yml", "-e", "triton_server_log_verbose=1")
    lines: list[str] = []
    killed_after = ""
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
            # The first result of the dying host inside the rollout play: its rollout has begun.
            if in_rollout and not killed_after and f"[{dying}]" in line:
                subprocess.run(["docker", "kill", dying], check=True, capture_output=True)
                killed_after = line.strip()
        returncode = proc.wait()
    dying_run = PlaybookRun(cmd, returncode, "".join(lines), time.monotonic() - start)
    save_log("host-dies-mid-deploy", dying_run)
    output = dying_run.output
    try:
        assert killed_after, "the rollout never reached the second host"
        assert returncode != 0
        assert re.search(rf"fatal: \[{dying}\]: UNREACHABLE!", output), output[-3000:]
        recap = dying_run.recap
        assert recap[dying]["unreachable"] == 1, recap
        # The first host finished its rollout (with the change) and keeps serving.
        assert "--log-verbose=1" in triton_container(SERVERS[0])["Args"]
        assert ready(SERVERS[0]) == 200
        smoke = smoke_test(SERVERS[0], fleet_release().path)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    finally:
        # Bring the host back whatever happened above, so the fleet is left converged.
        bring_back(dying)
        run = ansible_playbook("deploy.yml", log_name="deploy-after-host-died")
    assert run.returncode == 0, run.output[-3000:]
    for host in SERVERS:
        assert ready(host) == 200, host
        assert "--log-verbose=1" not in triton_container(host)["Args"], host
        smoke = smoke_test(host, fleet_release().path)
        assert smoke.returncode == 0, f"{host}: {smoke.stdout}{smoke.stderr}"
