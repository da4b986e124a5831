"""Seal a folder of Triton model files as a release, for the Molecule scenarios and tests that need one without
converting a model: `python tests/support/make_release.py DIR [--model NAME]...` writes DIR/release.json (one entry
per --model) and DIR/SHA256SUMS with the project's release code and prints the release as `tritonfleet release build`
does (JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tritonfleet.release import RELEASE_FILE, Release, ReleaseModel, content_key, file_checksums, write_sums


def seal(folder: Path, models: list[str]) -> Release:
    files = {path: digest for path, digest in file_checksums(folder).items() if path != RELEASE_FILE}
    entries = [ReleaseModel(name=model, model="test files", revision="", source="", conversion_key="", options={},
                            labels=[], variant="fp32", max_length=0, parity={}) for model in models]
    info = {"format": 1, "tool": "tests/support/make_release.py", "key": content_key(files), "builder": "",
            "models": [entry.__dict__ for entry in entries]}
    (folder / RELEASE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    write_sums(folder)
    return Release.open(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", action="append", help="a model's name in release.json (default: echo); repeat it")
    args = parser.parse_args()
    print(json.dumps({"built": True, **seal(args.folder, args.model or ["echo"]).as_json()}, indent=2))


if __name__ == "__main__":
    main()
