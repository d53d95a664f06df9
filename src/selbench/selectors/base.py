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

import copy
import math
import time
import typing
from dataclasses import dataclass, field, fields, is_dataclass
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
    launch: Any = None  # config.LaunchConfig: run scoring as N processes (stage "score")
    shard_root: Any = None  # folder for resumable score shards (runs/<exp>/shards)
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


def with_shared_proxy(config_cls: type, params: dict[str, Any] | None, proxy: Any) -> dict[str, Any]:
    """``selector_params`` with the run's shared proxy settings (:class:`ProxyConfig`) filled
    in: each set field goes to the selector config's same-named top-level field (``model``
    -> ``proxy``), else to its ``profile`` dataclass; keys given in ``params`` win; fields
    the selector does not have are ignored."""
    out = copy.deepcopy(dict(params or {}))
    if proxy is None:
        return out
    hints = typing.get_type_hints(config_cls)
    top = {f.name for f in fields(config_cls)}
    prof_cls = hints.get("profile") if "profile" in top else None
    prof = {f.name for f in fields(prof_cls)} if prof_cls is not None and is_dataclass(prof_cls) else set()
    for key, value in to_dict(proxy).items():
        if value is None:
            continue
        name = "proxy" if key == "model" else key
        if name in top:
            out.setdefault(name, value)
        elif name in prof:
            sub = out.setdefault("profile", {})
            if isinstance(sub, dict):
                sub.setdefault(name, value)
    return out


def build_selector(name: str, params: dict[str, Any] | None = None, proxy: Any = None) -> Selector:
    cls = SELECTORS.get(name)
    return cls.from_params(with_shared_proxy(cls.config_cls, params, proxy))


def models_used(config: Any) -> list[str]:
    """Model names a selector config will load (fields `proxy`, `embedder`, also inside a
    nested `profile`): what the plan checks for reachability."""
    out = []
    for obj in (config, getattr(config, "profile", None)):
        if obj is None or not is_dataclass(obj):
            continue
        for f in ("proxy", "embedder"):
            v = getattr(obj, f, None)
            if isinstance(v, str) and v and v not in out:
                out.append(v)
    return out
