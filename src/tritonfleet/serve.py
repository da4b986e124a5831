"""`tritonfleet serve`: run a real tritonserver on this machine.

Where the binary comes from, in order:
1. `$TRITONSERVER_BIN` (+ `$TRITON_BACKEND_DIR`), e.g. NVIDIA's image: /opt/tritonserver/bin/tritonserver;
2. `tritonserver` on PATH with /opt/tritonserver/backends;
3. the `nvidia-pytriton` wheel, which ships a real tritonserver (2.51) with the python backend. Its python
   backend stub for this interpreter's version is linked into a backend folder under build/.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from .errors import TritonfleetError
from .paths import BUILD_DIR

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path
    env: dict[str, str] = field(default_factory=dict)


def _pytriton_install() -> TritonInstall | None:
    try:
        import pytriton  # type: ignore[import-not-found]
    except ImportError:
        return None
    root = Path(pytriton.__file__).parent / "tritonserver"
    binary = root / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not binary.is_file() or not stub.is_file():
        return None
    # A backend folder of our own: the wheel's python backend plus the stub for this Python.
    backends = BUILD_DIR / "tritonserver" / f"backends-py{version}"
    py = backends / "python"
    py.mkdir(parents=True, exist_ok=True)
    for src in [*(root / "backends" / "python").iterdir(), stub]:
        if src.name == "__pycache__":
            continue
        dst = py / src.name
        if not dst.is_symlink() or dst.resolve() != src.resolve():
            dst.unlink(missing_ok=True)
            dst.symlink_to(src)
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    import sysconfig

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = ":".join(p for p in [libdir, str(libs), os.environ.get("LD_LIBRARY_PATH", "")] if p)
    env = {
        "LD_LIBRARY_PATH": ld,
        # The stub embeds libpython; point it at this environment's packages (numpy, tokenizers, onnxruntime).
        "PYTHONPATH": os.pathsep.join(p for p in [*sys.path[1:], os.environ.get("PYTHONPATH", "")] if p),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return TritonInstall(binary, backends, env)


def find_tritonserver() -> TritonInstall:
    if os.environ.get("TRITONSERVER_BIN"):
        binary = Path(os.environ["TRITONSERVER_BIN"])
        return TritonInstall(binary, Path(os.environ.get("TRITON_BACKEND_DIR", binary.parent.parent / "backends")))
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstall(Path(on_path), Path(os.environ.get("TRITON_BACKEND_DIR", "/opt/tritonserver/backends")))
    install = _pytriton_install()
    if install is None:
        raise ServerError("no tritonserver found: use NVIDIA's image, or `pip install nvidia-pytriton==0.7.0`")
    return install


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports on `host`. The sockets stay open until all are chosen: tritonserver refuses to
    start (printing its usage) when two of its ports are equal."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerError(TritonfleetError):
    """tritonserver could not be found, did not start, or did not become ready."""


class TritonServer:
    """A tritonserver child process: start, wait for readiness, stop cleanly. Usable as a context manager."""

    def __init__(
        self,
        repository: Path,
        *,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        exit_timeout: int = 30,
        extra_args: list[str] | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.host = host
        self.log_file = log_file
        self.exit_timeout = exit_timeout
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_handle = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    def command(self, install: TritonInstall) -> list[str]:
        # No request-size option here: tritonserver 2.51 (`--help`) has none. `--http-max-input-size` came in a later
        # release, and the gRPC server's largest message is hard-coded (2**31 - 1 bytes; one byte more gets
        # RESOURCE_EXHAUSTED "Received message larger than max"). A 256 MiB request, over HTTP or gRPC, reaches the
        # python models, which refuse it (TEXT[0] is ... bytes; max_text_bytes) after the server and the stub have
        # held it in memory. The bound that spares that memory is the load balancer's
        # (load_balancer_max_request_size); model_repository/common/text_input.py says what each model checks.
        return [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={install.backend_dir}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--exit-timeout-secs={self.exit_timeout}",
            "--strict-readiness=true",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def start(self, ready_timeout: float = 180) -> TritonServer:
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist (run `tritonfleet build-repo`)")
        install = find_tritonserver()
        env = {**os.environ, **install.env}
        cmd = self.command(install)
        logger.info("Starting %s", " ".join(cmd))
        out = None
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = open(self.log_file, "wb")  # noqa: SIM115 - closed in stop()
            out = self._log_handle
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                     start_new_session=True)
        self.wait_ready(ready_timeout)
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = 0.0
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.proc.returncode} before it was ready"
                                  + (f"; see {self.log_file}" if self.log_file else ""))
            if self.is_ready():
                logger.info("tritonserver is ready: gRPC %s, HTTP %s", self.grpc_url, self.http_url)
                return
            if time.monotonic() - last > 10:
                logger.info("Waiting for tritonserver to become ready ...")
                last = time.monotonic()
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"tritonserver was not ready within {timeout:.0f} s"
                          + (f"; see {self.log_file}" if self.log_file else ""))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            logger.info("Stopping tritonserver (pid %d)", self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.exit_timeout + 10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        code = self.proc.returncode
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
