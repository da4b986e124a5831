"""RSS and CPU time of a process tree (a server and its children, e.g. Triton's python backend stubs), from /proc."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree(root: int) -> dict[int, float]:
    """{pid: cpu seconds} of `root` and all its descendants."""
    info = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                info[int(entry.name)] = st
    out: dict[int, float] = {}
    if root not in info:
        return out
    todo = [root]
    while todo:
        pid = todo.pop()
        out[pid] = info[pid][1]
        todo.extend(p for p, (ppid, _) in info.items() if ppid == pid and p not in out)
    return out


class TreeMonitor:
    """Samples a process tree's RSS (peak) and CPU time in a background thread between start() and stop()."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root, self.interval = root, interval
        self.peak_rss = 0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t1 = 0.0

    def sample(self) -> None:
        procs = tree(self.root)
        for pid, cpu in procs.items():
            self._cpu_first.setdefault(pid, cpu)
            self._cpu_last[pid] = cpu
        self.peak_rss = max(self.peak_rss, sum(_rss(p) for p in procs))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> TreeMonitor:
        self._t0 = time.monotonic()
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()
        self._t1 = time.monotonic()
        cpu = sum(self._cpu_last[p] - self._cpu_first.get(p, 0.0) for p in self._cpu_last)
        wall = max(self._t1 - self._t0, 1e-9)
        return {"peak_rss_mb": round(self.peak_rss / 2**20, 1), "cpu_s": round(cpu, 2),
                "cpu_cores": round(cpu / wall, 2), "wall_s": round(wall, 2)}


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy, all cores together (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(fields) - fields[3] - fields[4]) / _TICK


def loadavg() -> float:
    """The 1-minute load average, recorded with each measurement (MachineMonitor tells more; see there)."""
    return round(os.getloadavg()[0], 2)


class MachineMonitor:
    """How much CPU the rest of the machine (anything outside this process's tree) used during a measurement.

    The benchmark's own server, load generator and helpers are all descendants of the harness; on 2 cores they
    saturate the machine and push the load average up by themselves, so the load average cannot tell a quiet
    machine from a busy one. Busy CPU minus the harness tree's CPU can: that is other jobs (steal included).
    """

    def __init__(self) -> None:
        self._own = TreeMonitor(os.getpid())
        self._busy0 = 0.0
        self._t0 = 0.0

    def start(self) -> MachineMonitor:
        self._busy0 = busy_cpu_seconds()
        self._t0 = time.monotonic()
        self._own.start()
        return self

    def stop(self) -> dict[str, float]:
        own = self._own.stop()
        busy = busy_cpu_seconds() - self._busy0
        wall = max(time.monotonic() - self._t0, 1e-9)
        return {"machine_busy_cores": round(busy / wall, 2), "benchmark_cpu_cores": round(own["cpu_s"] / wall, 2),
                "foreign_cpu_cores": round(max(0.0, busy - own["cpu_s"]) / wall, 2)}
