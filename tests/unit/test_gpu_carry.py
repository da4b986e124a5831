"""What the GPU benchmark carries to the host: the trimmed tritonserver, within the device call's limit."""

from __future__ import annotations

import tarfile
import zipfile

from tritonfleet.bench.gpu import trim_pytriton


def test_the_trimmed_server_keeps_the_server_the_backend_and_one_stub(tmp_path):
    wheel = tmp_path / "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl"
    names = ["pytriton/tritonserver/bin/tritonserver", "pytriton/tritonserver/backends/python/libtriton_python.so",
             "pytriton/tritonserver/caches/local/libtritoncache_local.so",
             "pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub",
             "pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub",
             "nvidia_pytriton.libs/libcudart-abc.so.12", "nvidia_pytriton.libs/libpython3-13.so.1.0",
             "nvidia_pytriton.libs/libb64-x.so.0d", "pytriton/triton.py", "pytriton/tritonserver/external_libs/x.so"]
    with zipfile.ZipFile(wheel, "w") as z:
        for n in names:
            z.writestr(n, b"x" * 10)
    out = tmp_path / "server.tar.xz"
    kept = trim_pytriton(wheel, out, "3.12")
    assert sorted(kept) == sorted(["pytriton/tritonserver/bin/tritonserver",
                                   "pytriton/tritonserver/backends/python/libtriton_python.so",
                                   "pytriton/tritonserver/caches/local/libtritoncache_local.so",
                                   "pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub",
                                   "nvidia_pytriton.libs/libcudart-abc.so.12", "nvidia_pytriton.libs/libb64-x.so.0d"])
    with tarfile.open(out) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["pytriton/tritonserver/bin/tritonserver"] & 0o111
