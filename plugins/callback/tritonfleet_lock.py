"""The fleet lock: one ansible-playbook run at a time per inventory, on this controller.

Two runs against one fleet can drain two servers together, and each reads then writes the hosts' release records
(activations.json) and staging folders. So every playbook run through this repository's ansible.cfg takes an
exclusive lock first, and a second run stops at once, before any play, with the lock's holder in its message.

The lock is flock(2) on ``<inventory>/.tritonfleet.lock`` (the folder of the first inventory source; a file's
folder), held by the ansible-playbook process for its whole life. The kernel releases it when that process ends, in
any way (Ctrl-C, kill -9, a crash): a lock is never stale. The file says who holds it. Listing runs
(--syntax-check, --list-tasks, --list-hosts) do not take it.
"""

from __future__ import annotations

import datetime
import fcntl
import getpass
import os
import socket
import sys
from pathlib import Path

from ansible import context
from ansible.plugins.callback import CallbackBase
from ansible.utils.display import Display

DOCUMENTATION = """
    name: tritonfleet_lock
    type: aggregate
    short_description: one ansible-playbook run at a time per inventory
    description:
      - Takes an exclusive flock on .tritonfleet.lock in the inventory's folder when the playbook starts, and holds it
        until ansible-playbook exits. A second run stops at once with the holder's pid, user, host, playbook and start.
    requirements:
      - enable in ansible.cfg (callbacks_enabled = tritonfleet_lock)
"""

LOCK_NAME = ".tritonfleet.lock"
#: ansible-playbook's exit status when another run holds the lock (1: an error, as for a bad inventory).
EXIT_LOCKED = 1

display = Display()


def lock_path(inventory_sources: list[str]) -> Path:
    """The lock of the fleet these inventory sources describe: in the folder of the first one."""
    if not inventory_sources:
        raise ValueError("no inventory source to lock")
    first = Path(inventory_sources[0]).expanduser().resolve()
    return (first if first.is_dir() else first.parent) / LOCK_NAME


def try_lock(path: Path, holder: str) -> tuple[int | None, str]:
    """Take the lock: (its file descriptor, "") or (None, what its holder wrote) when another process holds it.

    The descriptor is close-on-exec (nothing ansible-playbook execs, ssh included, keeps it) and stays open for the
    life of the process; Ansible's forked workers share it, which keeps the one lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held_by = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        os.close(fd)
        return None, held_by
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode() + b"\n", 0)
    return fd, ""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "tritonfleet_lock"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._fd: int | None = None

    def v2_playbook_on_start(self, playbook) -> None:
        if self._fd is not None:  # several playbooks on one command line: the lock is already held
            return
        path = lock_path(list(context.CLIARGS.get("inventory") or []))
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        holder = (f"pid {os.getpid()}, user {getpass.getuser()} on {socket.gethostname()}, "
                  f"playbook {playbook._file_name}, since {started}")
        try:
            self._fd, held_by = try_lock(path, holder)
        except OSError as error:
            display.error(f"tritonfleet_lock: cannot open the fleet lock {path}: {error}")
            sys.exit(EXIT_LOCKED)
        if self._fd is None:
            display.error(f"Another ansible-playbook run holds the fleet lock {path} ({held_by or 'holder unknown'}). "
                          "Two runs at once could drain two servers together: this run changed nothing. Wait for "
                          "the other run to end (the lock ends with its process, however it ends), then run again.")
            sys.exit(EXIT_LOCKED)
