"""Targeted embedding selection: each eval prompt takes its nearest pool rows in turn.

The embedding baseline of the targeted-selection studies: arXiv 2503.01807 ("Embed": pool
rows ranked by embedding cosine similarity to the eval queries, round-robin over the
queries as for RDS+) and arXiv 2602.14696 (EMBED representation with the round-robin
algorithm, dcml-lab/targeted-instruction-selection ``selection/round_robin.py``). Added
because those studies' embedding baseline is targeted, while ``kcenter`` and
``knn-density`` are not.

- pool rows: all-MiniLM-L6-v2 of ``instruction\\ninput\\noutput`` from the pool's shared
  embedding shards (:mod:`.embedcache`, as ``ifd-diverse``); queries: the same model on the
  target prompts (``target``: ``eval`` = the run's eval prompts, an eval set name or a
  ``.jsonl`` file; or ``target_texts`` inline);
- similarity = cosine (dot product of unit vectors);
- round-robin: the queries are visited in order, cyclically; each takes its most similar
  row not yet taken, until ``ceil(ratio * N)`` rows are taken;
- ties of a query's similarities are ordered by selbench's seeded tie-break (theirs: the
  lowest index); score = a row's largest similarity to any query.

Differences: their embedders are GTR-T5-base / NV-Embed-v2 on chat-formatted text, and
2503.01807 also tests mean aggregation; MiniLM is the embedder shipped here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..embeddings import embed
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget, rank_by_score
from .embedcache import RECIPES, embed_estimate, pool_embeddings
from .targets import target_identity, target_prompts


@dataclass
class EmbedTargetConfig(SelectorConfig):
    target: str = "eval"
    """eval (the run's eval prompts) | a registered eval set name | a .jsonl file of prompts."""
    target_texts: list[str] | None = None
    """Target prompts given inline (instead of ``target``)."""
    recipe: str = "instruction-input-output"
    embed_max_length: int = 512
    embed_batch_size: int = 64


def round_robin(sim: np.ndarray, k: int, seed: int) -> list[int]:
    """Queries (rows of ``sim``) in turn each take their most similar unused column."""
    Q, n = sim.shape
    k = min(k, n)
    orders = [rank_by_score(sim[q], seed) for q in range(Q)]
    ptr = [0] * Q
    used = np.zeros(n, bool)
    out: list[int] = []
    q = 0
    while len(out) < k:
        o = orders[q]
        while used[o[ptr[q]]]:
            ptr[q] += 1
        j = int(o[ptr[q]])
        used[j] = True
        out.append(j)
        q = (q + 1) % Q
    return out


@SELECTORS.register("embed-target", "embed-rr")
class EmbedTarget(Selector):
    """Round-robin nearest pool rows to each eval prompt (MiniLM cosine)."""

    config_cls = EmbedTargetConfig
    description = "targeted embedding selection: round-robin nearest rows to the eval prompts (MiniLM)"
    paper_name = "Embed (round-robin)"
    reference = "arXiv 2503.01807; arXiv 2602.14696 (dcml-lab/targeted-instruction-selection)"
    family = "baseline"
    report_rank = 12
    needs = ("embeddings", "target")
    cost_class = "proxy-forward"

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"target_texts": ["alpha beta gamma", "kappa lambda mu"]}

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict | None:
        return embed_estimate(n, tokens, self.config.recipe, self.config.embed_max_length)

    def context_identity(self, ctx: SelectionContext) -> dict:
        return target_identity(self.config.target, self.config.target_texts, ctx)

    def select(self, pool, ratio, ctx: SelectionContext, scores=None) -> Selection:
        c = self.config
        if c.recipe not in RECIPES:
            raise ValueError(f"embed-target: recipe must be one of {', '.join(RECIPES)}, got {c.recipe!r}")
        k = budget(ratio, len(pool))
        queries, where = target_prompts(c.target, c.target_texts, ctx, "embed-target")
        E = pool_embeddings(pool.rows, ctx, c.recipe, c.embed_max_length, c.embed_batch_size)
        Qe = embed(queries, c.embed_batch_size, c.embed_max_length)
        sim = Qe.astype(np.float64) @ E.astype(np.float64).T
        chosen = round_robin(sim, k, ctx.seed)
        return Selection(chosen, sim.max(axis=0), {
            "budget": k, "filter_report": f"round-robin over {len(queries)} target prompts "
                                          f"({where}), MiniLM cosine"})

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        return self.select(pool, 1.0, ctx).scores
