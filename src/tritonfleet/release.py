"""A model release, built, named, verified and found in one place.

A release is a Triton model repository that serves one or more named classifiers. Next to the models it holds:

    SHA256SUMS            the sha256 of every other file, in `sha256sum` format:
                          `sha256sum --check --strict SHA256SUMS` verifies the release on any host
    release.json          the spec it was built from (models, sources, options), its key, labels, parity figures
    <model>/golden.json   each model's golden file (the smoke test reads it; Triton ignores files there)

Two names identify it:
- its **key**: the sha256 of its inputs (each model's source and options, the tool version, the builder).
  The key addresses the build cache: the same inputs are never converted twice.
- its **id**: the sha256 of its SHA256SUMS, i.e. of its contents. Hosts keep releases under their id and
  Ansible compares ids; bytes that differ give another id.

This module is the one owner of: the options of a model (conversion and serving, one set of defaults, types
and help), the keys, the checksums, the release manifest, and the record of which release a fleet serves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ReleaseError

SUMS_FILE = "SHA256SUMS"
RELEASE_FILE = "release.json"

# --- checksums and keys: the one implementation ----------------------------------------------------------

_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_CHUNK):
            h.update(block)
    return h.hexdigest()


def _is_listed(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return path.is_file() and "__pycache__" not in rel.parts and rel.as_posix() != SUMS_FILE


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (SHA256SUMS itself and __pycache__ left out), by POSIX path, sorted
    bytewise (as `LC_ALL=C sort`)."""
    root = Path(root)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix().encode()):
        if not _is_listed(path, root):
            continue
        rel = path.relative_to(root).as_posix()
        if "\n" in rel or "\\" in rel:
            raise ReleaseError(f"{root}: the file name {rel!r} cannot be listed in {SUMS_FILE}")
        out[rel] = file_sha256(path)
    return out


def sums_text(checksums: Mapping[str, str]) -> str:
    """The SHA256SUMS text of `checksums`: one `<sha256>  <path>` line per file, as `sha256sum` writes it."""
    return "".join(f"{digest}  {rel}\n" for rel, digest in checksums.items())


def tree_checksum(root: Path) -> str:
    """One sha256 for a directory tree, names and contents: the sha256 of the SHA256SUMS text of its files.

    For a release this is its id (the sha256 of its SHA256SUMS file). `tritonfleet checksum DIR` prints it.
    """
    return hashlib.sha256(sums_text(file_checksums(root)).encode()).hexdigest()


def content_key(data: Any) -> str:
    """The key of some inputs: the sha256 (16 hex digits) of their canonical JSON. Every cache key is this."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
