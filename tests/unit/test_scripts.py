"""The shell scripts never open /dev/stdout or /dev/stderr by name.

Opening them by name opens the file behind the descriptor again, truncated: with `scripts/demo.sh > demo.log 2>&1`,
deploy-local.sh's `... | tee /dev/stderr` emptied demo.log of everything written before it (setup, the images).
Write to the descriptor (`>&2`) or to a file of your own instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("scripts/*.sh"), *ROOT.glob(".ci/*")])
BY_NAME = re.compile(r"/dev/std(out|err)|/dev/fd/[12]\b|/proc/self/fd/[12]\b")


def opened_by_name(text: str) -> list[str]:
    """The lines (comments aside) that name the standard streams as files."""
    return [line.strip() for line in text.splitlines() if BY_NAME.search(line.split("#", 1)[0])]


@pytest.mark.unit
@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_no_script_opens_a_standard_stream_by_name(script):
    assert opened_by_name(script.read_text()) == []


@pytest.mark.unit
def test_the_check_finds_tee_and_redirections_but_not_descriptors_or_comments():
    text = 'x=$(cmd | tee /dev/stderr)\necho hi > /dev/stdout\necho ok >&2\n# tee /dev/stderr truncates\n'
    assert opened_by_name(text) == ["x=$(cmd | tee /dev/stderr)", "echo hi > /dev/stdout"]
