"""The one-call GPU benchmark (`scripts/gpu-bench.sh`): prepared on the build machine, run on a bare GPU host.

The GPU host (../shared/notes/GPU.md) has Python 3.12 with CUDA torch, transformers, tokenizers, numpy, grpcio
and protobuf, no network, and only what the checkout brings (64 MiB with it). So:

- `prepare` (build machine) puts into CARRY_DIR (under build/, ignored by git) what the host lacks: the real
  tritonserver 2.51 from the nvidia-pytriton wheel for Python 3.12, trimmed to the server, its python backend and
  the 3.12 stub (`trim_pytriton`); perf_analyzer from the tritonclient 2.41.1 wheel; and the pure-Python packages
  the project's code imports there (jinja2, markupsafe, tqdm) plus tritonclient and python-rapidjson for 3.12.
- `run` (GPU host) prints what it finds about the host first, then: builds the roberta-base-size random model with
  the host's torch, converts it (TorchScript), builds the repository with KIND_GPU and fp16 (the python-backend
  TorchScript runner on CUDA), serves it with the carried tritonserver, measures W200 and a sweep up to 1,024
  users (perf_analyzer on raw text; the harness's asyncio client in several processes where perf_analyzer cannot
  run), the offline torch fp16 limit at the best batch, and writes gpu-bench.json (+ gpu-bench.png where
  matplotlib is, + the server log) into the output folder: at most 8 files.
- `dry-run` does the same on this CPU machine at tiny scale (KIND_CPU, the tiny RoBERTa, few users, seconds) with
  the venv's tritonserver: tests/bench/test_gpu_dry_run.py runs it so that the script cannot rot.
- `plot DIR` renders gpu-bench.png from gpu-bench.json (for a host without matplotlib).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..paths import BUILD_DIR, PROJECT_ROOT

logger = logging.getLogger("tritonfleet.gpu")

#: What `prepare` writes and `run` reads (an ignored folder of the checkout: the device call carries it).
CARRY_DIR = BUILD_DIR / "gpu-carry"
#: The device call brings back at most this many files from the output folder.
MAX_OUTPUT_FILES = 8
#: The checkout and the carried files together may not exceed this.
CARRY_LIMIT_BYTES = 64 * 2**20
PYTRITON = "nvidia-pytriton==0.7.0"
PA_TRITONCLIENT = "tritonclient==2.41.1"
#: Pure-Python packages the project imports on the host, copied from this venv (their C speedups are optional).
PURE_PACKAGES = ("jinja2", "markupsafe", "tqdm")
#: Wheels for the host's Python (tritonclient.grpc needs rapidjson, a C extension).
HOST_WHEELS = ("tritonclient==2.73.0", "python-rapidjson")
#: tritonclient's generated protobuf code needs protobuf >= this; `run` puts the carried one first on an older host.
PROTOBUF = "protobuf==6.33.5"
#: The 2.51 python backend stub mishandles BYTES tensors under numpy 2 (docs/DEPLOY.md): where the host's numpy
#: is 2.x, the stub (not the benchmark process) gets this one first on its path.
STUB_NUMPY = "numpy==1.26.4"


@dataclass
class GpuBenchConfig:
    """One run. `dry_run`: the tiny model on KIND_CPU with the venv's tritonserver, a few seconds per step."""

    output: Path
    dry_run: bool = False
    carry: Path = CARRY_DIR
    preset: str = "roberta-base"
    kind: str = "KIND_GPU"
    fp16: bool = True
    instances: int = 2
    tokenizer_instances: int = 4
    max_batch_size: int = 256
    max_queue_delay_us: int = 2000
    users: int = 200
    duration: float = 15.0
    warmup: float = 3.0
    sweep: list[int] = field(default_factory=lambda: [1, 32, 128, 200, 512, 1024])
    sweep_duration: float = 6.0
    sweep_warmup: float = 2.0
    offline_batches: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    offline_duration: float = 3.0
    ready_timeout: float = 240.0
    #: numpy 1.26 first in the python backend stub's environment (None: where this host's numpy is 2.x).
    stub_numpy1: bool | None = None
    texts: int = 512
    pa_threads: int = 16
    client_processes: int = 8

    @classmethod
    def tiny(cls, output: Path) -> GpuBenchConfig:
        return cls(output=output, dry_run=True, preset="tiny-roberta", kind="KIND_CPU", fp16=False, instances=1,
                   tokenizer_instances=1, max_batch_size=16, users=4, duration=2.0, warmup=0.5, sweep=[1, 4],
                   sweep_duration=1.5, sweep_warmup=0.5, offline_batches=[4, 8], offline_duration=0.5, texts=64,
                   pa_threads=2, client_processes=2)


# --- prepare (build machine) ---------------------------------------------------------------------------------

def trim_pytriton(wheel: Path, out: Path, python: str = "3.12") -> list[str]:
    """Write `out` (tar.xz) with what tritonserver needs from the nvidia-pytriton wheel: the shared libraries
    (without the bundled libpython, the host has its own), bin/, backends/, caches/ and the stub for `python`.
    Returns the members written."""
    keep_prefixes = ("pytriton/tritonserver/bin/", "pytriton/tritonserver/backends/",
                     "pytriton/tritonserver/caches/", f"pytriton/tritonserver/python_backend_stubs/{python}/",
                     "nvidia_pytriton.libs/")
    members = []
    with zipfile.ZipFile(wheel) as z, tarfile.open(out, "w:xz", preset=6) as tar:
        for info in z.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(keep_prefixes) or "/__pycache__/" in name:
                continue
            if name.startswith("nvidia_pytriton.libs/libpython3"):
                continue
            data = z.read(info)
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o755 if (info.external_attr >> 16) & 0o111 or "/bin/" in name or "stub" in name else 0o644
            tar.addfile(ti, io.BytesIO(data))
            members.append(name)
    return members


def _pip_download(spec: str, dest: Path, python: str | None = None, platform_tag: str | None = None) -> Path:
    args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    if python:
        args += ["--python-version", python]
    if platform_tag == "manylinux_2_28_x86_64":  # and the older manylinux tags such a host runs as well
        args += [a for t in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", t)]
    elif platform_tag:
        args += ["--platform", platform_tag]
    before = set(dest.glob("*.whl"))
    subprocess.run([*args, spec], check=True)
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob(f"{spec.split('=')[0].replace('-', '_')}*"))
    return new[-1]


def prepare(carry: Path = CARRY_DIR, python: str = "3.12") -> dict[str, Any]:
    """Fill `carry` with what the GPU host lacks (see the module doc); refuse when it would not fit."""
    import lzma

    carry.mkdir(parents=True, exist_ok=True)
    wheels = carry.parent / "gpu-carry-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    server = carry / "tritonserver.tar.xz"
    if not server.is_file():
        whl = _pip_download(PYTRITON, wheels, python, "manylinux_2_35_x86_64")
        trim_pytriton(whl, server, python)
    pa = carry / "perf_analyzer.xz"
    if not pa.is_file():
        whl = _pip_download(PA_TRITONCLIENT, wheels, None, "manylinux1_x86_64")
        with zipfile.ZipFile(whl) as z:
            data = z.read("tritonclient-2.41.1.data/data/bin/perf_analyzer")
        pa.write_bytes(lzma.compress(data, preset=9))
    site = carry / "site.tar.xz"
    if not site.is_file():
        staging = carry.parent / "gpu-carry-site"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for pkg in PURE_PACKAGES:
            src = Path(__import__(pkg).__file__).parent
            shutil.copytree(src, staging / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        for spec, into in [*((w, staging) for w in HOST_WHEELS), (PROTOBUF, staging / "protobuf-fallback"),
                           (STUB_NUMPY, staging / "numpy1")]:
            with zipfile.ZipFile(_pip_download(spec, wheels, python, "manylinux_2_28_x86_64")) as z:
                for n in z.namelist():
                    if not n.split("/")[0].endswith((".data", ".dist-info")):
                        z.extract(n, into)
        with tarfile.open(site, "w:xz") as tar:
            tar.add(staging, arcname="site")
    sizes = {p.name: p.stat().st_size for p in sorted(carry.iterdir())}
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    checkout = sum((PROJECT_ROOT / f).stat().st_size for f in tracked.decode().split("\0")
                   if f and (PROJECT_ROOT / f).is_file())
    total = checkout + sum(sizes.values())
    info = {"carry": str(carry), "files": sizes, "checkout_bytes": checkout, "total_bytes": total,
            "limit_bytes": CARRY_LIMIT_BYTES}
    if total > CARRY_LIMIT_BYTES:
        raise RuntimeError(f"the checkout and {carry} take {total / 2**20:.1f} MiB, over the "
                           f"{CARRY_LIMIT_BYTES / 2**20:.0f} MiB a device call carries")
    (carry / "carry.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# --- the host ------------------------------------------------------------------------------------------------

def _cmd(args: list[str], timeout: float = 20) -> str:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({args[0]}: {exc})"


def host_facts() -> dict[str, Any]:
    """What the run finds about the host, printed first (GPU.md lists what was never verified there)."""
    import sysconfig

    facts: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpus": os.cpu_count(), "libpython_dir": sysconfig.get_config_var("LIBDIR"),
        "libpython": sysconfig.get_config_var("LDLIBRARY"),
        "nvidia_smi": _cmd(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,utilization.gpu",
                            "--format=csv,noheader"]),
        "ulimit_l": _cmd(["bash", "-c", "ulimit -l"]), "dev_shm": _cmd(["df", "-h", "/dev/shm"]).splitlines()[-1:],
        "mem_total": next((line for line in Path("/proc/meminfo").read_text().splitlines()
                           if line.startswith("MemTotal")), ""),
    }
    mods = {}
    for mod in ("torch", "transformers", "tokenizers", "numpy", "onnxruntime", "grpc", "google.protobuf",
                "jinja2", "tritonclient.grpc", "matplotlib"):
        try:
            m = __import__(mod, fromlist=["_"])
            mods[mod] = str(getattr(m, "__version__", "ok"))
        except Exception as exc:  # noqa: BLE001 - report whatever fails to import
            mods[mod] = f"MISSING ({type(exc).__name__}: {str(exc)[:120]})"
    facts["modules"] = mods
    try:
        import torch

        facts["cuda"] = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                         "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    except Exception as exc:  # noqa: BLE001
        facts["cuda"] = f"torch: {exc}"
    return facts


def unpack_carry(carry: Path, work: Path, stub_numpy1: bool | None = None) -> dict[str, str]:
    """Unpack the carried server, perf_analyzer and packages into `work`; return the environment that runs them
    (TRITONSERVER_BIN, TRITON_BACKEND_DIR, LD_LIBRARY_PATH, PATH, TRITONFLEET_PERF_ANALYZER).

    The python backend stub's embedded Python ignores PYTHONPATH (isolated) and takes its environment from
    `python3` on PATH. So PATH starts with a small virtual environment of this interpreter (`stub_env`) whose
    site-packages hold numpy 1.26 when the stub needs it (`stub_numpy1`; None: when this host's numpy is 2.x, which
    the 2.51 stub mishandles for BYTES tensors) and a .pth file with this interpreter's own path (torch,
    tokenizers, ...) and the carried packages."""
    import lzma
    import sysconfig

    work.mkdir(parents=True, exist_ok=True)
    for name in ("tritonserver.tar.xz", "site.tar.xz"):
        with tarfile.open(carry / name) as tar:
            tar.extractall(work, filter="fully_trusted")
    root = work / "pytriton" / "tritonserver"
    libs = work / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"the carried server has no python backend stub for Python {version}")
    shutil.copy2(stub, root / "backends" / "python" / stub.name)
    # perf_analyzer links libcudart.so.12 and libb64.so.0d: the server's bundled copies serve, by those names
    for pattern, name in (("libcudart-*.so.12*", "libcudart.so.12"), ("libb64-*.so.0d*", "libb64.so.0d")):
        found = sorted(libs.glob(pattern))
        if found and not (libs / name).exists():
            (libs / name).symlink_to(found[0].name)
    pa = work / "perf_analyzer"
    pa.write_bytes(lzma.decompress((carry / "perf_analyzer.xz").read_bytes()))
    pa.chmod(0o755)
    for p in (root / "bin" / "tritonserver", *root.rglob("triton_python_backend_stub")):
        p.chmod(0o755)
    if stub_numpy1 is None:
        import numpy

        stub_numpy1 = int(numpy.__version__.split(".")[0]) >= 2
    env_bin = stub_env(work / "stub-env", [work / "site" / "numpy1"] if stub_numpy1 else [],
                       [work / "site", *(Path(p) for p in sys.path[1:] if p and Path(p).is_dir())])
    ld = [sysconfig.get_config_var("LIBDIR") or "", str(libs), os.environ.get("LD_LIBRARY_PATH", "")]
    return {"TRITONSERVER_BIN": str(root / "bin" / "tritonserver"), "TRITON_BACKEND_DIR": str(root / "backends"),
            "LD_LIBRARY_PATH": ":".join(p for p in ld if p), "PATH": f"{env_bin}{os.pathsep}{os.environ['PATH']}",
            "TRITONFLEET_PERF_ANALYZER": str(pa), "TRITONFLEET_STUB_NUMPY1": str(stub_numpy1).lower()}


def stub_env(venv: Path, first: list[Path], then: list[Path]) -> Path:
    """A virtual environment of this interpreter: the packages in `first` come before everything, then the
    directories `then` (a .pth file). Returns its bin directory (for PATH)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    real = Path(os.path.realpath(sys.executable))
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("python3", f"python{version}", "python"):
        link = venv / "bin" / name
        if not link.exists():
            link.symlink_to(real)
    (venv / "pyvenv.cfg").write_text(f"home = {real.parent}\ninclude-system-site-packages = false\n"
                                     f"version = {sys.version.split()[0]}\n")
    site = venv / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    for src in first:
        for item in src.iterdir():
            dst = site / item.name
            if not dst.exists():
                dst.symlink_to(item)
    (site / "tritonfleet-host.pth").write_text("".join(f"{p}\n" for p in then))
    return venv / "bin"


# --- measuring ------------------------------------------------------------------------------------------------

def _stats(http_url: str, model: str) -> tuple[int, int]:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as r:
        s = json.loads(r.read())["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


class GpuSampler:
    """nvidia-smi utilization and memory once a second while a measurement runs (absent: nothing)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._t = threading.Thread(target=self._loop, daemon=True)
            self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            out = _cmd(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"], 5)
            with contextlib.suppress(ValueError, IndexError):
                u, m = out.splitlines()[0].split(",")
                self.samples.append((float(u), float(m)))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._t:
            self._t.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        us = [u for u, _ in self.samples]
        return {"gpu_util_mean_pct": round(sum(us) / len(us), 1), "gpu_util_max_pct": max(us),
                "gpu_mem_max_mib": max(m for _, m in self.samples)}


def measure(cfg: GpuBenchConfig, server: Any, texts_file: Path, pa_data: Path, users: int, duration: float,
            warmup: float, logs: Path) -> dict[str, Any]:
    """One closed-loop measurement of the ensemble: perf_analyzer when it runs here, else the asyncio client
    in `cfg.client_processes` processes (latencies merged)."""
    from .. import layout
    from . import perfanalyzer

    before = _stats(server.http_url, layout.MODELS.classifier)
    pa = perfanalyzer.find_perf_analyzer(None)
    with GpuSampler() as gpu:
        res: dict[str, Any] | None = None
        if pa is not None:
            binary, env = pa
            if warmup > 0:
                perfanalyzer.run(binary, env, server.grpc_url, pa_data, users, max(2.0, warmup), logs / "pa-warm.csv",
                                 model=layout.MODELS.ensemble, max_threads=cfg.pa_threads)
            res = perfanalyzer.run(binary, env, server.grpc_url, pa_data, users, duration, logs / "pa.csv",
                                   model=layout.MODELS.ensemble, max_threads=cfg.pa_threads)
            if res["errors"]:
                logger.warning("gpu: perf_analyzer failed (%s); the asyncio client measures instead",
                               res["error_samples"][-1:])
                res = None
        if res is None:
            res = _loadgen(cfg, server.grpc_url, texts_file, users, duration, warmup, logs)
    after = _stats(server.http_url, layout.MODELS.classifier)
    inf, exe = after[0] - before[0], after[1] - before[1]
    res.update(gpu.summary())
    res["avg_batch_size"] = round(inf / exe, 2) if exe else None
    logger.info("gpu:   %d users: %.1f texts/s, p50 %s ms, p99 %s ms, errors %s, batch %s, %s", users,
                res["throughput"], res.get("p50_ms"), res.get("p99_ms"), res["errors"], res["avg_batch_size"],
                gpu.summary())
    return res


def _loadgen(cfg: GpuBenchConfig, url: str, texts_file: Path, users: int, duration: float, warmup: float,
             logs: Path) -> dict[str, Any]:
    import numpy as np

    from .loadgen import percentiles

    n = max(1, min(cfg.client_processes, users))
    procs = []
    for k in range(n):
        share = users // n + (1 if k < users % n else 0)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tritonfleet.bench.loadgen", "--mode", "grpc-text", "--url", url, "--data",
             str(texts_file), "--users", str(share), "--duration", str(duration), "--warmup", str(warmup),
             "--latencies", str(logs / f"lat-{k}.npy")], stdout=subprocess.PIPE, text=True))
    outs = [json.loads(p.communicate(timeout=duration + warmup + 300)[0].strip().splitlines()[-1]) for p in procs]
    lat = np.concatenate([np.load(logs / f"lat-{k}.npy") for k in range(n)])
    return {"throughput": round(sum(o["throughput"] for o in outs), 2), "errors": sum(o["errors"] for o in outs),
            "completed": sum(o["completed"] for o in outs), **percentiles(list(lat)),
            "load_generator": f"tritonclient.grpc.aio in {n} processes", "users": users,
            "error_samples": [s for o in outs for s in o["error_samples"]][:5]}


def offline_torch(cfg: GpuBenchConfig, model_file: Path, tokenizer_file: Path, texts: list[str],
                  max_length: int, pad_id: int) -> dict[str, Any]:
    """The TorchScript model in-process (CUDA fp16 on a GPU), batches of the workload padded to their longest
    text: texts/s with tokenization and model-only, per batch size; the best is the limit."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer

    device = "cuda" if cfg.kind == "KIND_GPU" and torch.cuda.is_available() else "cpu"
    module = torch.jit.load(str(model_file), map_location=device).eval()
    if cfg.fp16 and device == "cuda":
        module = module.half()
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    rows = []
    for batch in cfg.offline_batches:
        def run(start: int, batch: int = batch) -> tuple[float, float]:
            t0 = time.perf_counter()
            encs = tok.encode_batch([texts[(start + i) % len(texts)] for i in range(batch)])
            width = max(len(e.ids) for e in encs)
            ids = np.full((batch, width), pad_id, dtype=np.int64)
            mask = np.zeros((batch, width), dtype=np.int64)
            for r, e in enumerate(encs):
                ids[r, :len(e.ids)] = e.ids
                mask[r, :len(e.ids)] = 1
            t1 = time.perf_counter()
            with torch.inference_mode():
                module(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)).float().cpu()
            return time.perf_counter() - t0, time.perf_counter() - t1

        run(0)
        run(batch)
        done, model_s, t0, pos = 0, 0.0, time.perf_counter(), 0
        while time.perf_counter() - t0 < cfg.offline_duration:
            _, m = run(pos)
            pos += batch
            done += batch
            model_s += m
        wall = time.perf_counter() - t0
        rows.append({"batch_size": batch, "throughput": round(done / wall, 1),
                     "model_only_throughput": round(done / model_s, 1), "device": device,
                     "dtype": "fp16" if cfg.fp16 and device == "cuda" else "fp32"})
        logger.info("gpu:   offline torch batch %d: %.1f texts/s (model only %.1f)", batch, rows[-1]["throughput"],
                    rows[-1]["model_only_throughput"])
    return {"batches": rows, "best": max(rows, key=lambda r: r["throughput"])}


# --- the run --------------------------------------------------------------------------------------------------

def run(cfg: GpuBenchConfig) -> dict[str, Any]:
    """The whole GPU benchmark into cfg.output (see the module doc); returns the report it wrote."""
    from .. import layout
    from ..convert import load_manifest
    from ..release import ModelOptions
    from ..serve import TritonServer, free_ports
    from . import workload

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TRITONFLEET_GPU_WORK", "/tmp/tritonfleet-gpu"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    facts = host_facts()
    print("gpu-bench: host\n" + json.dumps(facts, indent=2), flush=True)
    report: dict[str, Any] = {"tool": "tritonfleet gpu-bench", "dry_run": cfg.dry_run, "host": facts,
                              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                              "steps": {}, "errors": {}}

    def save() -> None:
        (out / "gpu-bench.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    def step(name: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def cm() -> Any:
            t0 = time.time()
            logger.info("gpu: %s ...", name)
            try:
                yield
            finally:
                report["steps"][name] = round(time.time() - t0, 1)
                logger.info("gpu: %s: %.1f s", name, time.time() - t0)
                save()
        return cm()

    save()
    if not cfg.dry_run:
        with step("unpack the carried server"):
            env = unpack_carry(cfg.carry, work, cfg.stub_numpy1)
            os.environ.update(env)
            report["carry"] = env
    model_dir, art = work / "model" / cfg.preset, work / "artifacts" / cfg.preset
    with step(f"build the random {cfg.preset} model, convert it to TorchScript"):
        # In a fresh process with only the project on its path: torch in the benchmark's own process, once the
        # carried packages are imported, crashed (SIGSEGV) on the H200 host.
        report["model"] = _in_clean_process(["model", "--model-dir", str(model_dir), "--artifacts", str(art),
                                             "--preset", cfg.preset, "--device",
                                             "cuda" if cfg.kind == "KIND_GPU" else "cpu"]
                                            + (["--fp16"] if cfg.fp16 and cfg.kind == "KIND_GPU" else []))
    manifest = load_manifest(art)
    opts = ModelOptions(formats=("torchscript",), format="torchscript", backend="python", instance_kind=cfg.kind,
                        fp16=cfg.fp16, instance_count=cfg.instances, tokenizer_instance_count=cfg.tokenizer_instances,
                        max_batch_size=cfg.max_batch_size, max_queue_delay_us=cfg.max_queue_delay_us,
                        preprocessing="python")
    repo = work / "repo"
    with step("build the repository"):
        from ..repo import build_repository

        shutil.rmtree(repo, ignore_errors=True)
        build_repository([(layout.DEFAULT_MODEL_NAME, art, opts)], repo)
    report["repository"] = {"options": opts.as_dict(), "path": str(repo)}
    tok_file = art / layout.TOKENIZER_DIR / "tokenizer.json"
    texts = workload.make_texts(tok_file, cfg.texts)
    texts_file = workload.write_json(work / "texts.json", {"texts": texts})
    pa_data = workload.write_json(work / "text_data.json",
                                  {"data": [{layout.TEXT: {"content": [t], "shape": [1]}} for t in texts]})
    http, grpc, metrics = free_ports(3)
    server_log = out / "tritonserver.log"
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, log_file=server_log)
    try:
        with step("start tritonserver"):
            server.start(ready_timeout=cfg.ready_timeout)
        with step(f"W{cfg.users}"):
            report["w200"] = measure(cfg, server, texts_file, pa_data, cfg.users, cfg.duration, cfg.warmup, logs)
        report["sweep"] = []
        with step(f"sweep {cfg.sweep}"):
            for users in cfg.sweep:
                report["sweep"].append(measure(cfg, server, texts_file, pa_data, users, cfg.sweep_duration,
                                               cfg.sweep_warmup, logs))
                save()
    except Exception as exc:  # noqa: BLE001 - keep what was measured, report the rest
        logger.exception("gpu: serving failed")
        report["errors"]["serving"] = " ".join(str(exc).split())[:2000]
    finally:
        server.stop()
    try:
        with step("offline torch"):
            report["offline"] = offline_torch(cfg, art / layout.TORCHSCRIPT_FILE, tok_file, texts,
                                              manifest["max_length"], manifest["pad_token_id"])
    except Exception as exc:  # noqa: BLE001
        logger.exception("gpu: offline torch failed")
        report["errors"]["offline"] = " ".join(str(exc).split())[:2000]
    report["targets"] = targets(report)
    report["elapsed_s"] = round(time.time() - t_start, 1)
    save()
    try:  # in a fresh process too: matplotlib after the carried packages crashed on the H200 host
        _in_clean_process(["plot", str(out)])
    except RuntimeError as exc:
        print(f"gpu-bench: no PNG here ({exc}): render it with `scripts/gpu-bench.sh plot DIR`", flush=True)
    _trim_log(server_log)
    files = sorted(p.name for p in out.iterdir())
    if len(files) > MAX_OUTPUT_FILES:
        raise RuntimeError(f"{out} holds {len(files)} files; a device call brings back {MAX_OUTPUT_FILES}")
    return report


def _in_clean_process(args: list[str]) -> dict[str, Any]:
    """`python -m tritonfleet.bench.gpu ARGS` with only the project's sources on PYTHONPATH; its last line (JSON)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "tritonfleet.bench.gpu", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    print(proc.stdout[-3000:], end="", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def prepare_model(model_dir: Path, artifacts: Path, preset: str, device: str, fp16: bool) -> dict[str, Any]:
    """The random model and its TorchScript export (parity checked on the CPU). For a GPU, the export is then traced
    again on the device, in fp16 if asked: a CPU trace of RoBERTa bakes the CPU device into its graph, and an fp32
    trace its float constants, so neither runs on CUDA in fp16. That trace is checked against eager on the device."""
    import torch

    from ..adapter import ModelTorchTraceAdapter
    from ..convert import convert, load_manifest, load_model
    from ..random_model import make_random_model
    from ..release import ModelOptions

    if not (model_dir / "config.json").is_file():
        make_random_model(model_dir, preset)
    if not (artifacts / "manifest.json").is_file():
        convert(str(model_dir), artifacts, ModelOptions(formats=("torchscript",), format="torchscript"))
    info: dict[str, Any] = {"traced_on": "cpu", "dtype": "fp32"}
    if device == "cuda":
        model, _ = load_model(str(model_dir))
        model = model.cuda().eval()
        if fp16:
            model = model.half()
        vocab = int(load_manifest(artifacts)["vocab_size"])
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (2, 100), generator=gen).cuda()
        mask = torch.ones_like(ids)
        with torch.no_grad():
            traced = torch.jit.trace(ModelTorchTraceAdapter(model), (ids, mask), check_trace=False)
            short = (ids[:, :37], mask[:, :37])
            diff = float((traced(*short).float() - model(input_ids=short[0], attention_mask=short[1]).logits.float())
                         .abs().max())
        if diff > 1e-3:
            raise RuntimeError(f"the {device} trace differs from eager on the device by {diff}")
        torch.jit.save(traced, str(artifacts / "model.pt"))
        info = {"traced_on": device, "dtype": "fp16" if fp16 else "fp32", "max_abs_logit_diff_vs_eager": diff}
    return info


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 11's GPU targets: >= 10,000 texts/s at high concurrency, p99 <= 50 ms at W200 (through Triton)."""
    best = max((p["throughput"] for p in report.get("sweep", []) if not p.get("errors")), default=None)
    w = report.get("w200") or {}
    p99 = w.get("p99_ms")
    return {"peak_throughput": {"value": best, "target": ">= 10000", "pass": None if best is None else best >= 10000},
            "w200_p99_ms": {"value": p99, "target": "<= 50", "pass": None if p99 is None else p99 <= 50}}


def _trim_log(path: Path, keep: int = 2 * 2**20) -> None:
    if path.is_file() and path.stat().st_size > keep:
        data = path.read_bytes()[-keep:]
        path.write_bytes(b"[... cut ...]\n" + data)


def plot(report: dict[str, Any], png: Path) -> Path:
    """Throughput and p99/p50 against concurrency, and the offline limit as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = report.get("sweep") or []
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [p["users"] for p in pts]
    ax[0].plot(xs, [p["throughput"] for p in pts], "o-", label="Triton (ensemble, TorchScript fp16 runner)")
    best = (report.get("offline") or {}).get("best")
    if best:
        ax[0].axhline(best["throughput"], ls="--", color="tab:blue",
                      label=f"offline torch, batch {best['batch_size']}")
    ax[0].set_title("Throughput (texts/s)")
    ax[1].plot(xs, [p.get("p99_ms") or float("nan") for p in pts], "o-", label="p99")
    ax[1].plot(xs, [p.get("p50_ms") or float("nan") for p in pts], "o:", label="p50")
    ax[1].set_title("Latency (ms)")
    ax[1].set_yscale("log")
    for a in ax:
        a.set_xscale("log")
        a.set_xlabel("concurrent users")
        a.grid(alpha=0.3)
        a.legend()
    gpu = (report.get("host") or {}).get("nvidia_smi", "")
    fig.suptitle(f"tritonfleet gpu-bench{' (DRY RUN, CPU)' if report.get('dry_run') else ''}: {gpu[:80]}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu-bench.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("prepare", help="build machine: put what the GPU host lacks into the carry folder")
    s.add_argument("--carry", type=Path, default=CARRY_DIR)
    s.add_argument("--python", default="3.12", help="the GPU host's Python version (default 3.12)")
    for name, hlp in (("run", "GPU host: the benchmark"), ("dry-run", "this CPU machine: the same, tiny")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--out", type=Path, required=True, help=f"output folder (at most {MAX_OUTPUT_FILES} files)")
        s.add_argument("--carry", type=Path, default=CARRY_DIR)
        s.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                       help="override a GpuBenchConfig field, e.g. --set duration=30 --set 'sweep=[1,64,1024]'")
    s = sub.add_parser("plot", help="render gpu-bench.png from DIR/gpu-bench.json")
    s.add_argument("dir", type=Path)
    s = sub.add_parser("model", help="(run's first step) the random model and its TorchScript for the device")
    s.add_argument("--model-dir", type=Path, required=True)
    s.add_argument("--artifacts", type=Path, required=True)
    s.add_argument("--preset", required=True)
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--fp16", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout)
    if args.command == "prepare":
        print(json.dumps(prepare(args.carry, args.python), indent=2))
        return 0
    if args.command == "plot":
        plot(json.loads((args.dir / "gpu-bench.json").read_text()), args.dir / "gpu-bench.png")
        return 0
    if args.command == "model":
        print(json.dumps(prepare_model(args.model_dir, args.artifacts, args.preset, args.device, args.fp16)))
        return 0
    cfg = GpuBenchConfig.tiny(args.out) if args.command == "dry-run" else GpuBenchConfig(output=args.out)
    cfg.carry = args.carry
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(cfg, key):
            p.error(f"--set {key}: no such setting")
        setattr(cfg, key, json.loads(value))
    report = run(cfg)
    print(json.dumps({"w200": report.get("w200"), "sweep": [(x["users"], x["throughput"], x.get("p99_ms"))
                                                           for x in report.get("sweep", [])],
                      "offline": (report.get("offline") or {}).get("best"), "targets": report["targets"],
                      "errors": report["errors"], "steps": report["steps"]}, indent=1))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    rc = main()
    # On the H200 host the interpreter segfaulted at exit, after every file was written (a native library's
    # teardown). Leave without running the finalizers, so that the exit status is the benchmark's own.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
