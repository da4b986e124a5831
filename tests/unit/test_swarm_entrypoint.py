"""The swarm task's entrypoint (roles/triton_server/files/swarm-entrypoint.py), run as the swarm runs it: a real
process wrapping a command. The command here is a small HTTP server that answers Triton's readiness path and records
when it gets SIGTERM, in Triton's place (the entrypoint only needs its readiness URL and its signals)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tritonfleet.serve import free_ports

pytestmark = pytest.mark.unit

ENTRYPOINT = Path(__file__).resolve().parents[2] / "roles" / "triton_server" / "files" / "swarm-entrypoint.py"
DRAIN = 3.0

#: In Triton's place: ready on its port; on SIGTERM it writes the time to a file and exits with status 3.
WRAPPED = textwrap.dedent("""
    import http.server, signal, sys, time
    port, record = int(sys.argv[1]), sys.argv[2]
    def stop(*_):
        open(record, "w").write(repr(time.time()))
        sys.exit(3)
    signal.signal(signal.SIGTERM, stop)
    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # ready, with one model (sentiment): Triton's 400 for another
            ok = self.path in ("/v2/health/ready", "/v2/models/sentiment/ready")
            self.send_response(200 if ok else 400); self.send_header("Content-Length", "0"); self.end_headers()
        def log_message(self, *args): pass
    http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()
""")


def check(port: int, path: str = "/v2/health/ready") -> int:
    """The status of one readiness check, or 0 when the connection is refused or closed."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except (OSError, http.client.HTTPException):
        return 0


def wait_for(condition, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


@pytest.fixture
def task(tmp_path: Path):
    """The entrypoint wrapping the stand-in, both up: (process, readiness port, SIGTERM record of the stand-in)."""
    ready_port, wrapped_port = free_ports(2)
    record = tmp_path / "sigterm"
    (tmp_path / "wrapped.py").write_text(WRAPPED)
    # A session of its own: the teardown kills the stand-in with the entrypoint. (Killing the entrypoint alone left
    # the stand-in serving, and a later test's readiness check could find a leftover one: 200 after SIGTERM.)
    proc = subprocess.Popen([sys.executable, str(ENTRYPOINT), f"--port={ready_port}", f"--drain={DRAIN}",
                             f"--ready-url=http://127.0.0.1:{wrapped_port}/v2/health/ready", "--",
                             sys.executable, str(tmp_path / "wrapped.py"), str(wrapped_port), str(record)],
                            start_new_session=True)
    try:
        assert wait_for(lambda: check(ready_port) == 200), "the task never got ready"
        yield proc, ready_port, record
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def threads(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Threads:")))


def test_a_stopped_task_turns_unready_at_once_and_stops_triton_after_the_drain(task):
    proc, port, record = task
    stopped = time.time()
    proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: check(port) == 503, 10.0), "still ready after SIGTERM"
    unready = time.time()
    assert proc.wait(timeout=DRAIN + 15) == 3, "the exit status is not the wrapped command's"
    triton_stopped = float(record.read_text())
    assert unready < triton_stopped and triton_stopped - stopped >= DRAIN


def test_a_flood_of_silent_connections_holds_a_bounded_number_of_threads_and_is_dropped(task):
    """64 connections that send nothing: at most 16 are served (one thread each), the rest are closed at once;
    the silent ones are closed after the check timeout, and the readiness answers again."""
    proc, port, _ = task
    before = threads(proc.pid)
    flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
    try:
        time.sleep(1.0)
        assert threads(proc.pid) <= before + 16
        assert wait_for(lambda: check(port) == 200, 10.0), "the readiness did not answer after the flood timed out"
    finally:
        for conn in flood:
            conn.close()


@pytest.mark.parametrize(("path", "status"), [
    ("/v2/models/sentiment/ready", 200),
    ("/v2/models/topic/ready", 503),  # Triton: not a model it serves
    # Not a model's readiness, whatever Triton would make of it: nothing is passed on.
    ("/v2/models/sentiment/ready?x=1", 404),
    ("/v2/models/sentiment/versions/1/ready", 404),
    ("/v2/models/../health/ready", 404),
    ("/v2/models/sentiment%2F..%2F/ready", 404),
    ("/v2/models//ready", 404),
    ("/v2/models/sentiment/ready/", 404),
])
def test_a_models_readiness_is_tritons_for_that_model_and_nothing_else_is_passed_on(task, path, status):
    _, port, _ = task
    assert check(port, path) == status


def test_a_stopped_task_turns_unready_for_every_model_at_once(task):
    proc, port, _ = task
    proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: check(port, "/v2/models/sentiment/ready") == 503, 10.0), "still ready after SIGTERM"


def test_a_check_of_another_path_is_404(task):
    _, port, _ = task
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    conn.request("GET", "/v2/health/live")
    assert conn.getresponse().status == 404
    conn.close()


def test_the_entrypoint_needs_a_command():
    done = subprocess.run([sys.executable, str(ENTRYPOINT), "--port=1", "--drain=1", "--ready-url=http://x/"],
                          capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 2 and "no command" in done.stderr


def test_the_entrypoint_needs_tritons_readiness_url():
    done = subprocess.run([sys.executable, str(ENTRYPOINT), "--port=1", "--drain=1", "--ready-url=http://x/", "--",
                           "true"], capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 2 and "--ready-url must end with /v2/health/ready" in done.stderr
