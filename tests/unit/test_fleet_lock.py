"""The fleet lock (plugins/callback/tritonfleet_lock.py): real ansible-playbook runs through the repository's
ansible.cfg, against a throwaway inventory of the controller alone. A second run while one holds the lock stops
before its first play, naming the holder; once the holder ends, however it ends, the next run goes on."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
MESSAGE = "Another ansible-playbook run holds the fleet lock"

#: The lock file in the inventory's folder, and ansible-playbook's exit status when another run holds it. The plugin
#: is not imported here: importing ansible patches sys.intern for the whole process, which breaks torch's tests.
LOCK_NAME = ".tritonfleet.lock"
EXIT_LOCKED = 1


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """An inventory folder (the controller alone) and a playbook that waits as long as its `wait` says."""
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                                         "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    (tmp_path / "wait.yml").write_text(
        "- name: Wait\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Wait as long as asked\n      ansible.builtin.wait_for:\n        timeout: \"{{ wait | int }}\"\n")
    return inventory


def command(fleet: Path, wait: int = 0, inventory: Path | None = None) -> list[str]:
    return [str(ANSIBLE_PLAYBOOK), "-i", str(inventory or fleet), str(fleet.parent / "wait.yml"), "-e", f"wait={wait}"]


def run(fleet: Path, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(command(fleet, **kwargs), cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    return done, time.monotonic() - start


def wait_until_held(path: Path, pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().startswith(f"pid {pid},"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} never named pid {pid}")


def test_a_run_while_another_process_holds_the_lock_stops_before_any_play_naming_the_holder(fleet):
    """Any process that holds flock(2) on the file holds the fleet (this one, here); the file names the holder."""
    path = fleet / LOCK_NAME
    path.write_text("pid 1, user tester, playbook other.yml\n")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        done, seconds = run(fleet)
    finally:
        os.close(fd)
    assert done.returncode == EXIT_LOCKED, done.stdout + done.stderr
    assert MESSAGE in done.stderr and "pid 1, user tester, playbook other.yml" in done.stderr, done.stderr
    assert "PLAY [" not in done.stdout, done.stdout
    assert seconds < 30


def test_a_run_takes_the_lock_and_names_itself_in_it(fleet):
    done, _ = run(fleet)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PLAY [Wait]" in done.stdout
    assert f"playbook {fleet.parent / 'wait.yml'}, since " in (fleet / LOCK_NAME).read_text()


def test_two_concurrent_runs_the_second_stops_at_once_and_the_lock_ends_with_an_interrupted_first(fleet):
    """The first run waits 60 s; the second, through the inventory's file rather than its folder, stops at once.
    Ctrl-C (SIGINT to the first run's process group) ends the first, and with it the lock: a third run goes on."""
    first = subprocess.Popen(command(fleet, wait=60), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    try:
        wait_until_held(fleet / LOCK_NAME, first.pid)
        second, seconds = run(fleet, inventory=fleet / "hosts.yml")
        assert second.returncode == EXIT_LOCKED, second.stdout + second.stderr
        assert f"{MESSAGE} {fleet / LOCK_NAME} (pid {first.pid}," in second.stderr, second.stderr
        assert "PLAY [" not in second.stdout
        assert seconds < 30
        assert first.poll() is None, "the first run ended before the second was tried"
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=60)
    third, _ = run(fleet)
    assert third.returncode == 0, third.stdout + third.stderr
