"""Parsing judge completions into the two 1-10 scores. Never guesses.

Accepted (after dropping leading blank lines and markdown emphasis/heading marks):
- the paper's format, two numbers on the first line: ``8 7``, ``8, 7``, ``8.5 9``,
  ``8/10 7/10``, ``Scores: 8 7``;
- labelled scores on the first line or the first two lines:
  ``Assistant 1: 8`` / ``Assistant 2: 7`` (also ``Assistant 1 - 8/10, Assistant 2 - 7/10``).
Anything else, or a score outside [0, 10], returns None (counted as *unparsed*, never a tie).
"""
from __future__ import annotations

import re

_NUM = r"(\d+(?:\.\d+)?)(?:\s*/\s*10)?"
_SEP = r"\s*(?:,|;|\s|\band\b)\s*"
_PLAIN = re.compile(rf"^(?:scores?\s*[:=]?\s*)?{_NUM}{_SEP}{_NUM}\s*\.?$", re.I)
_LABEL = r"assistant\s*{k}\s*(?:score)?\s*[:=\-–]?\s*" + _NUM
_LABELLED = re.compile(
    r"^" + _LABEL.format(k=1) + r"\s*[,;]?\s*" + _LABEL.format(k=2) + r"\s*\.?$", re.I)


def _clean(line: str) -> str:
    line = line.strip()
    line = re.sub(r"^#+\s*", "", line)  # markdown heading
    line = line.replace("**", "").replace("__", "").replace("`", "")
    return line.strip()


def _valid(a: str, b: str) -> tuple[float, float] | None:
    x, y = float(a), float(b)
    if 0.0 <= x <= 10.0 and 0.0 <= y <= 10.0:
        return (x, y)
    return None


def parse_scores(text: str | None) -> tuple[float, float] | None:
    """The two scores (Assistant 1, Assistant 2) from a raw completion, or None."""
    if not text:
        return None
    lines = [c for c in (_clean(l) for l in text.strip().splitlines()) if c]
    if not lines:
        return None
    m = _PLAIN.match(lines[0])
    if m:
        return _valid(m.group(1), m.group(2))
    for head in (lines[0], " ".join(lines[:2])):
        m = _LABELLED.match(head)
        if m:
            return _valid(m.group(1), m.group(2))
    return None
