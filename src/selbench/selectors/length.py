"""Token-length selection (arXiv 2410.09335, "Rethinking Data Selection at Scale").

As in xiatingyu/SFT-DataSelection-at-scale (``token_length/compute_token_num.py``), counted
with the tokenizer of the model being fine-tuned (the run's target model, ``cfg.model``):

- query = ``"Human: {prompt}\\nAssistant:"`` (their ``"\\nHuman: {query}\\nAssistant: "``
  stripped), where prompt = ``instruction`` or ``instruction\\ninput`` when the input is
  non-empty (their pools are single-field conversations; this is the Alpaca mapping);
- response = ``output``;
- tokens = len(tokenizer(query)) + len(tokenizer(response)), each encoded on its own with the
  tokenizer's default special tokens (a BOS where the tokenizer adds one) and truncated at
  the tokenizer's ``model_max_length`` as their ``truncation=True`` call does;
- score = total tokens; the top ``ceil(ratio * N)`` (the longest) are selected.

``count: response`` ranks by the response's tokens alone. Ties: selbench's seeded
tie-break. Difference from their code: they count ``torch.count_nonzero(input_ids)``, which
skips any token whose id is 0 (e.g. ``!`` in Qwen2's vocabulary); every token is counted
here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models import load_tokenizer
from .base import SELECTORS, SelectionContext, Selector, SelectorConfig

COUNTS = ("total", "response")


@dataclass
class LengthConfig(SelectorConfig):
    count: str = "total"
    """Which tokens rank the rows: total (query + response, as the paper) | response."""
    tokenizer: str | None = None
    """Tokenizer to count with (None: the run's target model's, as the paper)."""


def query_text(row: dict) -> str:
    prompt = f"{row['instruction']}\n{row['input']}" if row.get("input") else row["instruction"]
    return f"Human: {prompt}\nAssistant:"


def _count(tokenizer, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros(0)
    ids = tokenizer(texts, truncation=True)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.float64)


def token_lengths(rows: list[dict], tokenizer, count: str = "total") -> np.ndarray:
    if count not in COUNTS:
        raise ValueError(f"length: count must be one of {', '.join(COUNTS)}, got {count!r}")
    resp = _count(tokenizer, [r["output"] for r in rows])
    if count == "response":
        return resp
    return _count(tokenizer, [query_text(r) for r in rows]) + resp


@SELECTORS.register("length", "token-length")
class Length(Selector):
    """Top-k by token length (query + response) under the target model's tokenizer."""

    config_cls = LengthConfig
    description = "token length (2410.09335): top by query + response tokens, target tokenizer"
    paper_name = "Token length"
    reference = "arXiv 2410.09335; xiatingyu/SFT-DataSelection-at-scale (token_length/)"
    family = "baseline"
    report_rank = 2
    cost_class = "cpu-seconds"

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"tokenizer": tiny_model}

    def context_identity(self, ctx: SelectionContext) -> dict:
        # the target model's tokenizer counts the tokens unless one is named in the config
        return {} if self.config.tokenizer else {"target_model": ctx.target_model}

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        c = self.config
        if c.count not in COUNTS:
            raise ValueError(f"length: count must be one of {', '.join(COUNTS)}, got {c.count!r}")
        name = c.tokenizer or ctx.target_model
        if not name:
            raise ValueError("length counts tokens with the target model's tokenizer: the "
                             "selection context has no target_model (set selector_params."
                             "tokenizer, or run it through bench / selbench.select)")
        tok = load_tokenizer(name)
        ctx.notes["length_tokenizer"] = name
        return token_lengths(pool.rows, tok, c.count)
