"""A selector plugin outside the package (used by tests/test_api.py): longest outputs first."""
from dataclasses import dataclass

import numpy as np

from selbench.selectors import SELECTORS, Selector, SelectorConfig


@dataclass
class LongestConfig(SelectorConfig):
    field: str = "output"


@SELECTORS.register("plugin-longest")
class Longest(Selector):
    config_cls = LongestConfig
    description = "plugin example: longest outputs first"

    def score(self, pool, ctx):
        return np.array([len(r[self.config.field]) for r in pool.rows], dtype=float)
