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

DEMO_MODEL_DIR = BUILD_DIR / "demo-model"
ARTIFACTS_DIR = BUILD_DIR / "artifacts"
REPOSITORY_DIR = BUILD_DIR / "model_repository"
