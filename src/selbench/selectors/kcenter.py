"""k-center greedy on the pool's MiniLM embeddings: a coverage (diversity) baseline.

The greedy 2-approximation of the k-center problem (Gonzalez 1985) used as a core-set
selector by Sener & Savarese (arXiv 1708.00489) and, for instruction data, by DiverseEvol
(arXiv 2311.08182, OFA-Sys/DiverseEvol, "kc"); the untargeted embedding-diversity baseline
of the large-scale comparisons (arXiv 2503.01807, 2602.14696 compare embedding-based
selection). Definition:

- embeddings: all-MiniLM-L6-v2 of ``instruction\\ninput\\noutput`` (mean pooled, unit
  length, at most 512 tokens), read from the pool's shared embedding shards
  (:mod:`.embedcache`, the same ones ``ifd-diverse`` reads: one embedding pass for all);
- the first center is one row drawn uniformly with the run seed (DiverseEvol starts from a
  random set); then, k - 1 times, the row farthest (Euclidean distance, equivalently the
  largest cosine distance on unit vectors) from its nearest chosen center is added;
- ties of that maximum (exact duplicates once everything else is covered) go to the row
  with the smallest seeded random key;
- score = the row's distance to the chosen set when it was picked (the first: +inf), so the
  score order is the greedy order; rows not picked get their final distance to the set,
  which is no larger than that of any picked row. The subsets of a seed are nested across
  ratios.

Differences: DiverseEvol runs k-center iteratively with model-updated embeddings (its
"evolving" part); this is the one-shot, frozen-embedding baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget
from .embedcache import RECIPES, embed_estimate, pool_embeddings


@dataclass
class KCenterConfig(SelectorConfig):
    recipe: str = "instruction-input-output"
    """Text embedded per row (instruction-input-output | instruction-input)."""
    embed_max_length: int = 512
    embed_batch_size: int = 64


def kcenter_greedy(E: np.ndarray, k: int, seed: int) -> tuple[list[int], np.ndarray]:
    """(the greedy order of k centers, each row's distance score) on the rows of E."""
    E = np.asarray(E, np.float64)
    n = len(E)
    k = min(k, n)
    rng = np.random.default_rng([seed, 0xC3])
    tiebreak = rng.random(n)
    first = int(rng.integers(n))
    sq = np.einsum("ij,ij->i", E, E)
    mind = np.full(n, np.inf)
    score = np.full(n, np.nan)
    chosen: list[int] = []
    j = first
    for step in range(k):
        score[j] = mind[j] if step else np.inf
        chosen.append(j)
        d = np.sqrt(np.maximum(sq + sq[j] - 2.0 * (E @ E[j]), 0.0))
        mind = np.minimum(mind, d)
        mind[chosen] = -np.inf
        if step + 1 == k:
            break
        m = mind.max()
        cand = np.flatnonzero(mind == m)
        j = int(cand[np.argmin(tiebreak[cand])])
    rest = np.isnan(score)
    score[rest] = mind[rest]
    return chosen, score


@SELECTORS.register("kcenter", "k-center")
class KCenter(Selector):
    """k-center greedy (farthest-first traversal) on MiniLM embeddings."""

    config_cls = KCenterConfig
    description = "k-center greedy on MiniLM embeddings (coverage / diversity)"
    paper_name = "k-center"
    reference = "arXiv 1708.00489 (core-set); DiverseEvol arXiv 2311.08182 (kc)"
    family = "baseline"
    report_rank = 10
    needs = ("embeddings",)
    cost_class = "proxy-forward"

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict | None:
        return embed_estimate(n, tokens, self.config.recipe, self.config.embed_max_length)

    def select(self, pool, ratio, ctx: SelectionContext, scores=None) -> Selection:
        c = self.config
        if c.recipe not in RECIPES:
            raise ValueError(f"kcenter: recipe must be one of {', '.join(RECIPES)}, got {c.recipe!r}")
        k = budget(ratio, len(pool))
        E = pool_embeddings(pool.rows, ctx, c.recipe, c.embed_max_length, c.embed_batch_size)
        chosen, score = kcenter_greedy(E, k, ctx.seed)
        return Selection(chosen, score, {"budget": k, "filter_report": f"k-center greedy over "
                                         f"{len(pool)} MiniLM embeddings ({c.recipe})"})

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        return self.select(pool, 1.0, ctx).scores
