"""Calibration texts for static int8 quantization: generated here, never a golden or agreement text.

Static quantization fixes each activation's scale from what the model sees on these texts, so they should look
like what it serves (short opinions, chat, plain statements, a few numbers and emoji), and they must not be the
texts the quantized model is then judged on: every text whose normalised form equals a golden or agreement text
is dropped (and counted, so the manifest shows the sets are disjoint).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

# fmt: off
_SUBJECTS = ["the staff", "this place", "the delivery", "my order", "the screen", "the plot", "our guide",
             "the battery", "the soundtrack", "the checkout", "the lecture", "the new menu", "the room",
             "customer support", "the second season", "the train", "the interface", "the price", "the ending",
             "the headphones", "the recipe", "the parking", "the instructions", "the weather app"]
_OPINIONS = ["was excellent", "was a disappointment", "is okay I guess", "could not have been better",
             "broke after a week", "arrived on time", "felt rushed", "is worth every cent", "was confusing",
             "made my day", "is exactly as described", "was loud and crowded", "works fine", "is overpriced",
             "surprised me in a good way", "never answered", "needs an update", "was cold", "is beautiful",
             "was average at best", "keeps crashing", "was friendly and quick", "is hard to read"]
_TAILS = ["", "", "", " honestly", " to be fair", " again", " this time", " for the money", " as usual",
          " if you ask me", " all things considered", " compared to last year"]
_CHAT = ["see you at {n}", "call me when you land", "is the meeting still at {n}?", "thanks, got it",
         "can you send the file", "running {n} minutes late", "no idea, ask Sam", "sounds good to me",
         "where did you park", "the package has number {n}"]
_EXTRAS = ["", "", "", "", "!", "?", " :)", " 👍", " 😡", " 🙂", "...", " 5/10", " 10/10", " #fail", " lol"]
# fmt: on


def normalise(text: str) -> str:
    """Case, spacing and punctuation folded: two texts that differ only in those are the same text."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def calibration_texts(count: int, exclude: Iterable[str] = (), seed: int = 17) -> tuple[list[str], int]:
    """`count` distinct generated texts none of which is (normalised) in `exclude`; and how many generated texts
    were dropped because they were."""
    banned = {normalise(t) for t in exclude}
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    dropped = 0
    while len(out) < count:
        if rng.random() < 0.2:
            text = rng.choice(_CHAT).format(n=rng.randint(2, 99))
        else:
            text = f"{rng.choice(_SUBJECTS)} {rng.choice(_OPINIONS)}{rng.choice(_TAILS)}"
            if rng.random() < 0.4:
                text += f", and {rng.choice(_SUBJECTS)} {rng.choice(_OPINIONS)}"
            text = text[0].upper() + text[1:]
        text += rng.choice(_EXTRAS)
        key = normalise(text)
        if key in banned:
            dropped += 1
            continue
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out, dropped
