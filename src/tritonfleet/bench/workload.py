"""The benchmark's workload: short English texts of 5 to 60 tokens, and their token ids for perf_analyzer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from .. import layout

# Plain review/chat sentences; the generator walks through their words so texts read like English.
ENGLISH_TEXT = """\
I love this phone, the battery lasts all day and the camera is great.
The movie was far too long and the ending made no sense at all.
Ok, let's see tomorrow if the weather is better for the trip.
The hotel staff were friendly but the room was small and noisy at night.
Dinner was fine, nothing special, the pasta was a bit salty.
What a fantastic concert, the band played every song we wanted to hear!
I waited two hours for customer service and nobody answered my question.
The new update fixed the crashes, so the app finally works as expected.
My flight was delayed again, this airline never respects its schedule.
The book starts slowly but the second half is brilliant and moving.
We are meeting at the station at nine, bring an umbrella just in case.
This coffee shop has the best croissants in town and the prices are fair.
The laptop heats up quickly and the fan is louder than I expected.
Thanks for the quick delivery, everything arrived in perfect condition.
The course covers the basics well, though the exercises could be harder.
I am not sure what to think about the new series, maybe it gets better.
Terrible experience, the food was cold and the waiter was rude to us.
The museum was quiet on Monday morning, a good time to visit.
Honestly the game is fun with friends but boring when you play alone.
The report is due on Friday, please send me your comments before then.
"""
_SENTENCES = ENGLISH_TEXT.split()


def make_texts(tokenizer_file: Path, count: int = 512, min_tokens: int = 5, max_tokens: int = 60,
               seed: int = 0) -> list[str]:
    """`count` texts whose token counts (special tokens included) are spread uniformly over min..max."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    rng = random.Random(seed)
    words = _SENTENCES
    texts = []
    while len(texts) < count:
        target = rng.randint(min_tokens, max_tokens)
        pos = rng.randrange(len(words))
        chosen: list[str] = []
        n = 0
        while n < target:
            chosen.append(words[pos % len(words)])
            pos += 1
            n = len(tok.encode(" ".join(chosen)).ids)
        if n > target and len(chosen) > 1:
            shorter = " ".join(chosen[:-1])
            if len(tok.encode(shorter).ids) >= min_tokens:
                chosen = chosen[:-1]
        texts.append(" ".join(chosen))
    return texts


def token_lengths(tokenizer_file: Path, texts: list[str], max_length: int) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(texts)]


def tensor_data(tokenizer_file: Path, texts: list[str], max_length: int) -> dict[str, Any]:
    """perf_analyzer's --input-data JSON: one entry per text, each with its own shape (client-side tokenization)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    data = []
    for enc in tok.encode_batch(texts):
        ids = [int(i) for i in enc.ids]
        data.append({layout.INPUT_IDS: {"content": ids, "shape": [len(ids)]},
                     layout.ATTENTION_MASK: {"content": [1] * len(ids), "shape": [len(ids)]}})
    return {"data": data}


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False))
    return path
