"""Where the project keeps its sources and its generated output."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository checkout (src/tritonfleet/paths.py -> repo root).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: Generated output; ignored by git. Override with TRITONFLEET_BUILD_DIR.
BUILD_DIR = Path(os.environ.get("TRITONFLEET_BUILD_DIR", PROJECT_ROOT / "build"))

#: Source templates of the model repository (config templates and python models).
TEMPLATE_DIR = Path(os.environ.get("TRITONFLEET_TEMPLATE_DIR", PROJECT_ROOT / "model_repository"))

#: The embedded demo models, one folder per task (tritonfleet demo-model --task NAME).
DEMO_MODELS_DIR = BUILD_DIR / "demo-models"
#: `tritonfleet convert` and `build-repo` without --output.
ARTIFACTS_DIR = BUILD_DIR / "artifacts"
REPOSITORY_DIR = BUILD_DIR / "model_repository"
#: Releases by key, and the conversion artifacts they are built from by conversion key (`tritonfleet release`).
RELEASES_DIR = BUILD_DIR / "releases"
CONVERSIONS_DIR = BUILD_DIR / "conversions"
#: Which release each fleet serves: <fleet>.json, written when a deploy activates a release.
DEPLOYED_DIR = BUILD_DIR / "deployed"
