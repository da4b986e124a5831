"""Small helpers shared by the CLI commands."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("tritonfleet")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by its POSIX path relative to root, sorted."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def tree_checksum(root: Path) -> str:
    """One sha256 for a whole directory tree (names and contents). Same as `tritonfleet checksum DIR`."""
    h = hashlib.sha256()
    for rel, digest in tree_checksums(root).items():
        h.update(f"{digest}  {rel}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a scratch directory beside `target`; on success it replaces `target` in one rename.

    On any exception the scratch directory is removed and `target` is left exactly as it was:
    a failed run leaves no partial artifacts.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
    os.rename(scratch, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Log the start and the duration of a long step."""
    logger.info("%s ...", what)
    t0 = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", what, time.perf_counter() - t0)
