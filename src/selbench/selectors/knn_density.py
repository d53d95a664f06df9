"""k-NN density on the pool's MiniLM embeddings: keep the least redundant rows.

The density is the k-NN kernel density estimate of TSDS (arXiv 2410.11303, ZifanL/TSDS) as
2602.14696 uses it in its KNN-KDE selection (dcml-lab/targeted-instruction-selection,
``selection/tsds_subset.py``), applied here without a target:

- embeddings: all-MiniLM-L6-v2 of ``instruction\\ninput\\noutput`` (unit length, at most 512
  tokens), from the pool's shared embedding shards (:mod:`.embedcache`, as ``ifd-diverse``);
- density(x) = sum over the ``neighbors`` rows nearest to x (x itself included, as theirs)
  of max(0, 1 - ||x - y||^2 / sigma^2), with ||x - y||^2 = 2 (1 - cos(x, y)) on unit vectors;
  sigma = 0.75 and neighbors = min(1000, max(1, N // 10)) as their hard-coded values; a row
  with no near neighbour has density 1 (itself);
- ``prefer: sparse`` (default) selects the ``ceil(ratio * N)`` rows of lowest density (the
  most isolated: a diversity / de-duplication baseline); ``prefer: dense`` the highest
  (the most typical). Score = -density (sparse) or density (dense).

Ties (many rows have density exactly 1: no neighbour within the kernel's radius) are
ordered by selbench's seeded tie-break, so among equally isolated rows the choice is a
seeded random one. Difference: TSDS and 2602.14696 use the density to down-weight
near-duplicates inside a target-driven (query-to-pool) assignment; here it ranks the pool on
its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import SELECTORS, SelectionContext, Selector, SelectorConfig
from .embedcache import RECIPES, embed_estimate, pool_embeddings

PREFER = ("sparse", "dense")


@dataclass
class KNNDensityConfig(SelectorConfig):
    prefer: str = "sparse"
    """sparse (lowest density first: the least redundant rows) | dense (highest first)."""
    sigma: float = 0.75
    neighbors: int | None = None
    """Neighbours summed per row, itself included (None: min(1000, max(1, N // 10)))."""
    recipe: str = "instruction-input-output"
    embed_max_length: int = 512
    embed_batch_size: int = 64


def knn_kde(E: np.ndarray, neighbors: int, sigma: float, chunk: int = 1024) -> np.ndarray:
    """Per row: the sum of max(0, 1 - d^2 / sigma^2) over its ``neighbors`` nearest rows
    (itself included), d the Euclidean distance of unit vectors (d^2 = 2 - 2 cos)."""
    E = np.asarray(E, np.float32)
    n = len(E)
    K = max(1, min(neighbors, n))
    out = np.zeros(n, np.float64)
    for s in range(0, n, chunk):
        cos = E[s:s + chunk] @ E.T
        for r in range(cos.shape[0]):
            cos[r, s + r] = 1.0  # itself at distance 0, whatever the float rounding
        kern = np.maximum(0.0, 1.0 - (2.0 - 2.0 * cos.astype(np.float64)) / sigma ** 2)
        if K < n:  # the K nearest = the K largest kernels (the kernel falls with distance)
            kern = -np.partition(-kern, K - 1, axis=1)[:, :K]
        out[s:s + chunk] = kern.sum(axis=1)
    return out


@SELECTORS.register("knn-density", "knn")
class KNNDensity(Selector):
    """Lowest k-NN kernel density first (TSDS's density, untargeted)."""

    config_cls = KNNDensityConfig
    description = "k-NN density on MiniLM embeddings: least redundant rows first"
    paper_name = "k-NN density"
    reference = "TSDS arXiv 2410.11303; arXiv 2602.14696 (KNN-KDE, dcml-lab/targeted-instruction-selection)"
    family = "baseline"
    report_rank = 11
    needs = ("embeddings",)
    cost_class = "proxy-forward"

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict | None:
        return embed_estimate(n, tokens, self.config.recipe, self.config.embed_max_length)

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        c = self.config
        if c.prefer not in PREFER:
            raise ValueError(f"knn-density: prefer must be one of {', '.join(PREFER)}, got {c.prefer!r}")
        if c.recipe not in RECIPES:
            raise ValueError(f"knn-density: recipe must be one of {', '.join(RECIPES)}, got {c.recipe!r}")
        if c.sigma <= 0:
            raise ValueError(f"knn-density: sigma must be > 0, got {c.sigma}")
        n = len(pool)
        K = c.neighbors if c.neighbors is not None else min(1000, max(1, n // 10))
        if K < 1:
            raise ValueError(f"knn-density: neighbors must be >= 1, got {K}")
        E = pool_embeddings(pool.rows, ctx, c.recipe, c.embed_max_length, c.embed_batch_size)
        dens = knn_kde(E, K, c.sigma)
        ctx.notes["knn_density"] = {"neighbors": K, "sigma": c.sigma,
                                    "isolated": int(np.sum(dens <= 1.0 + 1e-9))}
        return -dens if c.prefer == "sparse" else dens
