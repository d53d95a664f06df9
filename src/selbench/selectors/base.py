"""The selector interface.

A selector scores every pool example (higher = more worth training on) and the default
:meth:`Selector.select` takes the top ``ceil(ratio * N)``. Ties are broken by a seeded
random permutation: rank by (score descending, then a uniform key drawn from
``numpy.random.default_rng(seed)``), so equal scores are ordered reproducibly per seed and
without favouring file order. NaN scores rank below every number.

Adding a selector = one file in this folder:

    @dataclass
    class MyConfig(SelectorConfig):
        alpha: float = 1.0

    @SELECTORS.register("mine")
    class Mine(Selector):
        config_cls = MyConfig
        def score(self, pool, ctx): return np.array([...])
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import from_dict, to_dict
from ..registry import Registry


@dataclass
class SelectorConfig:
    """Base for every selector's own config dataclass (fields = its hyper-parameters)."""


@dataclass
class SelectionContext:
    """What a selector may use besides the pool: seed, device, run folder, logger."""

    seed: int = 0
    device: str = "cpu"
    run_dir: Any = None  # runs.RunDir | None; profiles are cached there when set
    pool_key: str = ""  # identifies the pool (source + sample) for profile caching
    data_dir: str | None = None
    log: Callable[[str], None] = print
    extra_seconds: float = 0.0  # upstream compute charged to this selection (e.g. proxy training)
    progress: bool = True  # progress bars for long scoring work
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Selection:
    indices: list[int]  # positions in the pool, in rank order
    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def budget(ratio: float, n: int) -> int:
    if not (0.0 < ratio <= 1.0):
        raise ValueError(f"ratio {ratio} is outside (0, 1]")
    return min(n, max(1, math.ceil(ratio * n - 1e-9)))


def rank_by_score(scores: np.ndarray, seed: int) -> np.ndarray:
    """Indices sorted by score descending, NaN last, ties by a seeded random key."""
    scores = np.asarray(scores, dtype=np.float64)
    tiebreak = np.random.default_rng(seed).random(len(scores))
    key = np.where(np.isnan(scores), -np.inf, scores)
    nan_last = np.isnan(scores).astype(np.int8)
    # lexsort: last key is primary
    return np.lexsort((tiebreak, -key, nan_last))


class Selector:
    config_cls: type[SelectorConfig] = SelectorConfig
    registry_name: str = "?"
    description: str = ""

    def __init__(self, config: SelectorConfig | None = None, **params: Any):
        if config is None:
            config = from_dict(self.config_cls, params, where=f"selector '{self.registry_name}'")
        self.config = config

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> "Selector":
        return cls(from_dict(cls.config_cls, params or {}, where=f"selector_params ({cls.registry_name})"))

    @property
    def name(self) -> str:
        return self.registry_name

    @classmethod
    def test_params(cls, tiny_model: str) -> dict[str, Any]:
        """Params that make this selector cheap on a tiny model (used by the contract test
        over every registered selector); selectors that need a proxy model point it here."""
        return {}

    def cache_config(self) -> dict[str, Any]:
        return {"selector": self.registry_name, **to_dict(self.config)}

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        raise NotImplementedError

    def select(self, pool, ratio: float, ctx: SelectionContext,
               scores: np.ndarray | None = None) -> Selection:
        k = budget(ratio, len(pool))
        if scores is None:
            scores = self.score(pool, ctx)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(pool),):
            raise ValueError(f"{self.registry_name}.score returned shape {scores.shape}, "
                             f"expected ({len(pool)},)")
        order = rank_by_score(scores, ctx.seed)
        return Selection([int(i) for i in order[:k]], scores, {"budget": k})

    def run(self, pool, ratio: float, ctx: SelectionContext) -> Selection:
        t0 = time.perf_counter()
        sel = self.select(pool, ratio, ctx)
        sel.info.setdefault("budget", budget(ratio, len(pool)))
        sel.info["select_seconds"] = time.perf_counter() - t0
        sel.info["selection_seconds"] = sel.info["select_seconds"] + ctx.extra_seconds
        return sel


class ProfileSelector(Selector):
    """Base for selectors built on the shared gradient profile (config field ``profile``)."""

    @classmethod
    def test_params(cls, tiny_model: str) -> dict[str, Any]:
        from ..gradients import tiny_profile_params

        return tiny_profile_params(tiny_model)


SELECTORS: Registry[type[Selector]] = Registry("selector")


def build_selector(name: str, params: dict[str, Any] | None = None) -> Selector:
    return SELECTORS.get(name).from_params(params)
