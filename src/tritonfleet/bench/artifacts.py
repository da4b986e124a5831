"""The benchmark's model and its conversion artifacts, and the int8 policy (may each int8 format, dynamic and
static, be what C and D serve?).

Both conversions go through `release.artifacts_for`: its key covers the model directory's contents, the
conversion options and the check texts, so a changed model, option or tool version converts again by itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import layout
from ..convert import load_manifest
from ..errors import UsageError
from ..paths import BUILD_DIR, DEMO_MODELS_DIR
from ..release import CONVERT, ModelOptions, ModelSpec, artifacts_for, conversion_key

if TYPE_CHECKING:
    from .runner import BenchConfig

logger = logging.getLogger(__name__)

#: The benchmark's conversion: every export a setup serves (B TorchScript, C and D ONNX fp32, int8 or int8-static).
#: The model is random, so its int8 labels mean nothing: their agreement is recorded, not required (the policy
#: below judges each int8 format on the demo model instead).
CONVERSION = ModelOptions(formats=("torchscript", "onnx", *layout.QUANTIZED_FORMATS), int8_min_agreement=0.0)
#: The demo model's int8 conversions: their agreement with fp32 on the demo's held-out texts is the int8 policy.
DEMO_CONVERSION = ModelOptions(formats=("onnx", *layout.QUANTIZED_FORMATS), format="int8", int8_min_agreement=0.0)
#: Conversion artifacts of both, one folder per conversion key.
CONVERSIONS_DIR = BUILD_DIR / "bench" / "conversions"
#: The demo task whose model judges int8 (the default model's: the article's sentiment classifier).
DEMO_TASK = "sentiment"


def prepare_artifacts(cfg: BenchConfig) -> tuple[Path, Path]:
    """(Hugging Face model dir, conversion artifacts) for the preset, built once and cached under build/bench.

    `cfg.artifacts` is used as given (it must hold every export of CONVERSION); otherwise the model directory
    (a random `cfg.preset` model unless `cfg.model_dir`) is converted into the cache when its key is missing.
    """
    from ..random_model import is_current, make_random_model

    model_dir = cfg.model_dir or BUILD_DIR / "bench" / "models" / cfg.preset
    if cfg.model_dir and not (model_dir / "config.json").is_file():
        raise UsageError(f"--model-dir {model_dir}: not a Hugging Face model directory (no config.json)")
    if not cfg.model_dir and not is_current(model_dir, cfg.preset):
        logger.info("bench: writing a random %s model to %s", cfg.preset, model_dir)
        make_random_model(model_dir, cfg.preset)
    if cfg.artifacts:
        need = [layout.MANIFEST_FILE, *(layout.FORMAT_FILES[f] for f in CONVERSION.formats)]
        if not all((cfg.artifacts / f).is_file() for f in need):
            raise UsageError(f"--artifacts {cfg.artifacts}: needs {', '.join(need)} "
                             f"(convert {' '.join(CONVERSION.to_cli_args(CONVERT))})")
        logger.info("bench: using artifacts %s (model %s)", cfg.artifacts, load_manifest(cfg.artifacts).get("model"))
        return model_dir, cfg.artifacts
    spec = ModelSpec(name=layout.DEFAULT_MODEL_NAME, model=str(model_dir), options=CONVERSION)
    artifacts = artifacts_for(spec, CONVERSIONS_DIR)
    logger.info("bench: artifacts %s (model %s)", artifacts, model_dir)
    return model_dir, artifacts


def demo_int8_artifacts(build: bool) -> Path | None:
    """The demo model's int8 conversion in the cache. With `build`, the demo model and its conversion are made
    when missing; without, an earlier run's conversion of the demo model as it is on disk, or None."""
    model_dir = DEMO_MODELS_DIR / DEMO_TASK
    spec = ModelSpec(name=DEMO_TASK, model=str(model_dir), options=DEMO_CONVERSION)
    if build:
        from ..demo import build_demo_model

        build_demo_model(DEMO_TASK, model_dir)
        logger.info("bench: int8 label agreement on the demo model (%s; measured once per conversion key)", model_dir)
        return artifacts_for(spec, CONVERSIONS_DIR)
    if not (model_dir / "config.json").is_file():
        return None
    cached = CONVERSIONS_DIR / conversion_key(spec)
    return cached if (cached / layout.MANIFEST_FILE).is_file() else None


def int8_policy(cfg: BenchConfig) -> dict[str, dict[str, Any]]:
    """For each int8 format (dynamic `int8`, calibrated `int8-static`): may it be served? Only if its labels agree
    with fp32 on >= cfg.int8_min_agreement of the DEMO model's golden and held-out texts (the benchmark's own model
    is random, so its labels cannot judge quantization). `--int8 on|off` forces every format."""
    if cfg.int8 in ("on", "off"):
        return {fmt: {"allowed": cfg.int8 == "on", "label_agreement": None, "reason": f"forced with --int8 {cfg.int8}"}
                for fmt in layout.QUANTIZED_FORMATS}
    demo = cfg.demo_artifacts or demo_int8_artifacts(build=cfg.measure_demo_agreement)
    manifest = load_manifest(demo) if demo and (demo / layout.MANIFEST_FILE).is_file() else None
    return {fmt: format_policy(fmt, manifest, demo, cfg.int8_min_agreement) for fmt in layout.QUANTIZED_FORMATS}


def format_policy(fmt: str, manifest: dict[str, Any] | None, demo: Path | None, threshold: float) -> dict[str, Any]:
    """The policy of one int8 format from the demo model's conversion manifest (None: not measured)."""
    if manifest is None or fmt not in manifest.get("parity", {}):
        where = demo or f"a conversion of the demo model {DEMO_MODELS_DIR / DEMO_TASK} in {CONVERSIONS_DIR}"
        return {"allowed": False, "label_agreement": None, "threshold": threshold,
                "reason": f"demo-model {fmt} agreement not measured ({where} missing; --tiny does not build it)"}
    rep = manifest["parity"][fmt]
    agree = float(rep["label_agreement"])
    allowed = agree >= threshold
    return {"allowed": allowed, "label_agreement": agree, "texts": rep.get("texts"),
            "disagreements": rep.get("disagreements", [])[:10], "threshold": threshold,
            "source": str(Path(demo or "") / layout.MANIFEST_FILE),
            "reason": (f"{fmt} agrees with fp32 on {agree:.2%} of {rep.get('texts')} demo-model texts "
                       f"({'>=' if allowed else '<'} {threshold:.0%}): {'allowed' if allowed else 'not allowed'}")}


def allowed_formats(policy: dict[str, dict[str, Any]]) -> list[str]:
    """The ONNX formats C and D may serve under `policy`: fp32 always, each int8 format where it is allowed."""
    return ["onnx", *(f for f in layout.QUANTIZED_FORMATS if policy.get(f, {}).get("allowed"))]
