"""A remote task that must run as the login user says so with a task variable, not the `become: false` keyword.

The inventories set `ansible_become: true`, and an inventory's connection variable outranks a task's keyword: the
keyword is silently ignored on a remote host (measured: a fetch of a 111 MB release with `become: false` still went
through sudo and the module's base64, 69 s; with `vars: {ansible_become: false}` it was one sftp, 6 s). On the
controller (`delegate_to: localhost`) the implicit localhost gets no inventory group_vars, so the keyword holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("roles/*/handlers/*.yml"), *ROOT.glob("playbooks/*.yml"),
     *ROOT.glob("playbooks/tasks/*.yml")]
)
BLOCK_KEYS = ("block", "rescue", "always")
PLAY_KEYS = ("pre_tasks", "tasks", "post_tasks", "handlers")


def remote_become_false(tasks: list, delegated: bool = False, where: str = "") -> list[str]:
    """The names of the tasks (blocks included) that set `become: false` and run on the inventory's host."""
    found = []
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        here = delegated or str(task.get("delegate_to", "")).strip() in ("localhost", "127.0.0.1") \
            or task.get("connection") == "local"
        name = f"{where}{task.get('name', '(unnamed)')}"
        if task.get("become") is False and not here:
            found.append(name)
        for key in BLOCK_KEYS:
            found += remote_become_false(task.get(key), here, f"{name} / ")
    return found


def plays_or_tasks(document: list) -> list:
    """A playbook's plays hold their tasks under PLAY_KEYS; a task file is the list of tasks itself."""
    if document and all(isinstance(item, dict) and ("hosts" in item or "import_playbook" in item) for item in document):
        tasks = []
        for play in document:
            local = play.get("hosts") == "localhost" or play.get("connection") == "local"
            if play.get("become") is False and not local:
                tasks.append({"name": f"play {play.get('name', '')}", "become": False})
            for key in PLAY_KEYS:
                tasks += [dict(t, delegate_to="localhost") if local and isinstance(t, dict) else t
                          for t in play.get(key) or []]
        return tasks
    return document


@pytest.mark.unit
@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_remote_task_relies_on_the_become_false_keyword(path):
    document = yaml.safe_load(path.read_text()) or []
    assert remote_become_false(plays_or_tasks(document)) == []


@pytest.mark.unit
def test_the_check_finds_a_remote_become_false_in_a_block_and_skips_the_controller():
    tasks = [
        {"name": "fetch", "ansible.builtin.fetch": {}, "become": False},
        {"name": "on the controller", "delegate_to": "localhost", "block": [{"name": "stat", "become": False}]},
        {"name": "remote block", "block": [{"name": "copy", "become": False}]},
        {"name": "as a variable", "vars": {"ansible_become": False}},
    ]
    assert remote_become_false(tasks) == ["fetch", "remote block / copy"]
