"""The client commands fail with one line, not a traceback, when the server is unreachable or silent."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tritonfleet import layout
from tritonfleet.cli import main
from tritonfleet.serve import free_ports


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    return free_ports(1)[0]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for c in conns:
        c.close()
    sock.close()


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_smoke_test_of_an_unreachable_server_is_one_line(tiny_artifacts, closed_port, protocol, capsys):
    code = main(["smoke-test", "--url", f"127.0.0.1:{closed_port}", "--protocol", protocol, "--timeout", "3",
                 "--golden", str(tiny_artifacts / layout.GOLDEN_FILE)])
    assert code == 1
    err = _one_line_error(capsys)
    assert err.startswith("smoke-test: ") and f"127.0.0.1:{closed_port}" in err


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_predict_against_a_server_that_never_answers_times_out_in_one_line(silent_server, protocol, capsys):
    code = main(["predict", "--url", f"127.0.0.1:{silent_server}", "--protocol", protocol, "--timeout", "1",
                 "hello"])
    assert code == 1
    err = _one_line_error(capsys)
    assert err.startswith("predict: ") and f"127.0.0.1:{silent_server}" in err


def test_predict_without_text_is_refused(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["predict"]) == 2
    assert "no text given" in _one_line_error(capsys)
