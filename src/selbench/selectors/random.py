"""Random selection: the baseline every method must beat."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import SELECTORS, SelectionContext, Selector, SelectorConfig


@dataclass
class RandomConfig(SelectorConfig):
    pass


@SELECTORS.register("random", "rand")
class RandomSelector(Selector):
    """Uniform random subset: scores are i.i.d. uniform draws from the run seed."""

    config_cls = RandomConfig
    description = "uniform random subset (seeded)"
    paper_name = "Random"
    family = "baseline"
    report_rank = 0

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        return np.random.default_rng([ctx.seed, 7919]).random(len(pool))
