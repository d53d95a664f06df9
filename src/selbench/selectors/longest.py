"""Longest responses: the "Long Is More for Alignment" baseline (arXiv 2402.04833).

Definition: score = the length of the response (the ``output`` field) alone, the instruction
and the ``input`` field not counted (``include_input: true`` adds the input); take the top
``ceil(ratio * N)``. Units (``unit``):

- ``words`` (default): whitespace-separated words, ``len(output.split())``;
- ``chars``: Unicode characters, ``len(output)``;
- ``tokens``: tokens of the run's target model tokenizer, no special tokens added.

Ties (equal lengths, common in every unit): ordered by selbench's seeded tie-break (a
uniform key from the run seed, :func:`~.base.rank_by_score`), never by file position.

Which unit the authors used is not stated in the paper, and the repository
(tml-epfl/long-is-more-for-alignment@5466f17) releases the selected data but no selection
script. Words are the default because they come closest to the released selection: on the
full Alpaca 52k at k = 1,000, the top 1,000 by words share 933 rows with the published
``filtered_alpaca_1k_longest.json`` (``published:long-is-more-1k-longest``), whatever the
tie rule (981 rows are longer than the 1,000th, 19 tie with it for 19 places); characters
share 857 or 858 (3 rows tie for the last place; 858 in file order), SmolLM2 tokens 840,
Gemma-3 tokens 850, Mistral-7B-v0.1 (SentencePiece) tokens 819. No unit reproduces it: 186 of the rows it leaves out are longer than some row it
includes in characters, in words and in SmolLM2, Gemma-3 and Mistral tokens all at once
(242 counting characters, words and SmolLM2 tokens), so no ranking by response length in
any of these units gives that set; the input field does not explain it either (words of
input + output: 901). tests/test_baselines.py's slow test checks these numbers on the real
data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models import load_tokenizer
from .base import SELECTORS, SelectionContext, Selector, SelectorConfig

UNITS = ("words", "chars", "tokens")


@dataclass
class LongestConfig(SelectorConfig):
    unit: str = "words"
    """Length unit: words (whitespace split) | chars | tokens (the target model's tokenizer)."""
    include_input: bool = False
    """Add the ``input`` field's length (the paper counts the response only)."""


def _lengths(texts: list[str], unit: str, tokenizer) -> np.ndarray:
    if unit == "chars":
        return np.array([len(t) for t in texts], dtype=np.float64)
    if unit == "words":
        return np.array([len(t.split()) for t in texts], dtype=np.float64)
    if tokenizer is None:
        raise ValueError("longest: unit 'tokens' needs the target model's tokenizer")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return np.array([len(x) for x in ids], dtype=np.float64)


def response_lengths(rows: list[dict], unit: str, include_input: bool = False,
                     tokenizer=None) -> np.ndarray:
    """Length of each row's response in ``unit``, plus that of its input when asked (the
    two counted apart and added)."""
    if unit not in UNITS:
        raise ValueError(f"longest: unit must be one of {', '.join(UNITS)}, got {unit!r}")
    out = _lengths([r["output"] for r in rows], unit, tokenizer)
    if include_input:
        out = out + _lengths([r.get("input") or "" for r in rows], unit, tokenizer)
    return out


@SELECTORS.register("longest", "long-is-more")
class Longest(Selector):
    """Top-k by response length (words by default; the input field not counted)."""

    config_cls = LongestConfig
    description = "longest responses (Long Is More): top by response length in words"
    paper_name = "Longest"
    reference = "arXiv 2402.04833; tml-epfl/long-is-more-for-alignment@5466f17 (data only)"
    family = "baseline"
    report_rank = 1
    cost_class = "free"

    def context_identity(self, ctx: SelectionContext) -> dict:
        return {"target_model": ctx.target_model} if self.config.unit == "tokens" else {}

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        c = self.config
        tok = None
        if c.unit == "tokens":
            if not ctx.target_model:
                raise ValueError("longest: unit 'tokens' needs the run's target model "
                                 "(SelectionContext.target_model)")
            tok = load_tokenizer(ctx.target_model)
        elif c.unit not in UNITS:
            raise ValueError(f"longest: unit must be one of {', '.join(UNITS)}, got {c.unit!r}")
        ctx.notes["length_unit"] = c.unit + (" (target tokenizer)" if tok is not None else "")
        return response_lengths(pool.rows, c.unit, c.include_input, tok)
