"""The conversion image's build context and its inputs: the one owner of both.

`scripts/build-images.sh convert` (the local and CI image) and the model_conversion role (image source `build`, on
the conversion host) both make the context with `tritonfleet image-context`, so the two build the same image from
the same files:

    conversion.Dockerfile       docker/conversion.Dockerfile
    requirements/<target>.txt   docker/conversion-requirements/*.txt: the hash-locked requirements of each target
                                (the build argument REQUIREMENTS picks one; docker/conversion-requirements/lock.sh)
    wheels/*.whl                a wheelhouse for an offline build (`--wheelhouse`), or nothing (pip uses the index)
    project/                    pyproject.toml, README.md, src/ (the project, installed last with --no-deps)
    model_repository/           the Triton model repository templates (TRITONFLEET_TEMPLATE_DIR)

Its **inputs** (`inputs()`, the value of the image's label `org.tritonfleet.inputs-sha256`) are the sha256 of every
file above but the wheels, and the build arguments. The wheels are left out: the lock's hashes decide which may be
installed, so any wheelhouse that installs gives the same packages. An image whose label differs from the inputs of
the checkout was built from something else and is rebuilt; the role also puts the inputs into the release key (the
builder), so a new image never reuses the releases and conversions of an old one.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .release import content_key, file_sha256

#: The label that carries an image's inputs (every image of scripts/build-images.sh has it).
LABEL = "org.tritonfleet.inputs-sha256"
#: Bump when the layout or the meaning of the inputs changes: every image is then rebuilt.
RECIPE = 1
DOCKERFILE = "docker/conversion.Dockerfile"
REQUIREMENTS = "docker/conversion-requirements"
CONTEXT_DOCKERFILE = "conversion.Dockerfile"
#: What stands in for README.md when the checkout has none (pyproject.toml names it as the readme).
README_STAND_IN = b"# tritonfleet\n"


@dataclass(frozen=True)
class Entry:
    """One file of the context: its path in the context, where its bytes come from, and whether it is executable."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False

    def sha256(self) -> str:
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        assert self.source is not None
        return file_sha256(self.source)

    @property
    def mode(self) -> int:
        return 0o755 if self.executable else 0o644


def _skipped(rel: Path) -> bool:
    return any(part == "__pycache__" or part.endswith(".egg-info") for part in rel.parts) or rel.suffix == ".pyc"


def _tree(root: Path, prefix: str) -> Iterator[Entry]:
    if not root.is_dir():
        raise UsageError(f"{root}: no such directory (the conversion image needs it)")
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix().encode()):
        rel = path.relative_to(root)
        if _skipped(rel) or path.is_symlink() or not path.is_file():
            continue
        yield Entry(f"{prefix}/{rel.as_posix()}", source=path, executable=bool(path.stat().st_mode & stat.S_IXUSR))


def entries(project: Path, dockerfile: str = DOCKERFILE) -> list[Entry]:
    """The files of the context (wheels aside), from the project checkout `project`, sorted by path."""
    project = Path(project)
    if not (project / dockerfile).is_file():
        raise UsageError(f"{project / dockerfile}: no such Dockerfile")
    if not (project / "pyproject.toml").is_file():
        raise UsageError(f"{project}: not the project checkout (no pyproject.toml)")
    locks = sorted((project / REQUIREMENTS).glob("*.txt"))
    if not locks:
        raise UsageError(f"{project / REQUIREMENTS}: no lock file (*.txt); docker/conversion-requirements/lock.sh "
                         "writes them")
    readme = project / "README.md"
    readme_entry = Entry("project/README.md", source=readme) if readme.is_file() else \
        Entry("project/README.md", data=README_STAND_IN)
    out = [
        Entry(CONTEXT_DOCKERFILE, source=project / dockerfile),
        *(Entry(f"requirements/{lock.name}", source=lock) for lock in locks),
        Entry("project/pyproject.toml", source=project / "pyproject.toml"),
        readme_entry,
        *_tree(project / "src", "project/src"),
        *_tree(project / "model_repository", "model_repository"),
    ]
    return sorted(out, key=lambda e: e.path.encode())


def wheels(wheelhouse: Path | None) -> list[Path]:
    """The wheels of a wheelhouse (its *.whl files; nothing else of it goes into the context)."""
    if wheelhouse is None:
        return []
    if not Path(wheelhouse).is_dir():
        raise UsageError(f"{wheelhouse}: no such wheelhouse directory")
    return sorted(Path(wheelhouse).glob("*.whl"))


def inputs(files: list[Entry], build_args: Mapping[str, object]) -> str:
    """The image's inputs: the key of its context's files (wheels aside) and its build arguments."""
    return content_key({"recipe": RECIPE, "files": {e.path: [e.sha256(), e.executable] for e in files},
                        "build_args": {str(k): str(v) for k, v in build_args.items()}})


def write_directory(files: list[Entry], wheel_files: list[Path], out: Path) -> None:
    """Write the context into `out` (replaced): the files, and the wheels hard-linked where the file system allows."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "wheels").mkdir(parents=True)
    for entry in files:
        dest = out / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.data is not None:
            dest.write_bytes(entry.data)
        else:
            shutil.copyfile(entry.source, dest)
        dest.chmod(entry.mode)
    for wheel in wheel_files:
        dest = out / "wheels" / wheel.name
        try:
            os.link(wheel, dest)
        except OSError:
            shutil.copyfile(wheel, dest)
        dest.chmod(0o644)
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)


def _tar_info(name: str, mode: int, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.type = mode, size, kind
    info.uid = info.gid = info.mtime = 0
    info.uname = info.gname = "root"
    return info


def write_tar(files: list[Entry], wheel_files: list[Path], tar_path: Path) -> None:
    """Write the context as an uncompressed tarball (root-owned, fixed modes and times; written aside, renamed)."""
    tar_path = Path(tar_path)
    part = tar_path.with_name(tar_path.name + ".part")
    folders = {"wheels"}
    for entry in files:
        folders.update(str(p) for p in Path(entry.path).parents if str(p) != ".")
    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
        for folder in sorted(folders, key=str.encode):
            tar.addfile(_tar_info(folder, 0o755, kind=tarfile.DIRTYPE))
        for entry in files:
            if entry.data is not None:
                tar.addfile(_tar_info(entry.path, entry.mode, len(entry.data)), io.BytesIO(entry.data))
                continue
            with open(entry.source, "rb") as fh:
                tar.addfile(_tar_info(entry.path, entry.mode, os.fstat(fh.fileno()).st_size), fh)
        for wheel in wheel_files:
            with open(wheel, "rb") as fh:
                tar.addfile(_tar_info(f"wheels/{wheel.name}", 0o644, os.fstat(fh.fileno()).st_size), fh)
    part.replace(tar_path)


def parse_build_args(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings (docker build's --build-arg) as a dict."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--build-arg {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def context(project: Path, build_args: Mapping[str, object], *, dockerfile: str = DOCKERFILE,
            wheelhouse: Path | None = None, output: Path | None = None, tar: Path | None = None) -> dict:
    """Compute the inputs of the conversion image of `project` with `build_args`; write its context into `output`
    (a directory) and/or `tar` (a tarball) when given. Returns what `tritonfleet image-context` prints."""
    files = entries(project, dockerfile)
    wheel_files = wheels(wheelhouse)
    key = inputs(files, build_args)
    if output is not None:
        write_directory(files, wheel_files, output)
    if tar is not None:
        write_tar(files, wheel_files, tar)
    return {"inputs": key, "label": LABEL, "dockerfile": CONTEXT_DOCKERFILE,
            "build_args": {str(k): str(v) for k, v in build_args.items()}, "files": len(files),
            "wheels": len(wheel_files), "output": str(output) if output else None, "tar": str(tar) if tar else None}
