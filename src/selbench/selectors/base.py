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
from typing import Any, Callable

import numpy as np

from ..config import from_dict, to_dict
from ..estimates import mean_tokens, model_params, profile_flops
from ..registry import Registry
from .codeid import code_identity
from .proxy.config import profile_key_name, tiny_profile_params


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
    progress: bool = True  # progress bars for long scoring work
    launch: Any = None  # config.LaunchConfig: run scoring as N processes (stage "score")
    shard_root: Any = None  # folder for resumable score shards (runs/<exp>/shards)
    eval_items: dict[str, list[dict]] = field(default_factory=dict)  # the run's eval prompts
    judges: dict[str, Any] = field(default_factory=dict)  # the run's judges, built once
    target_model: str | None = None  # the run's target model (cfg.model): its tokenizer counts tokens
    notes: dict[str, Any] = field(default_factory=dict)
    shared_work: dict[str, dict] = field(default_factory=dict)

    def shared(self, key: str, what: str, seconds: float, built_here: bool,
               flops: float | None = None, judge_calls: int = 0) -> None:
        """Record work this selection used that other selectors may share (one gradient
        profile, one IFD pass, one embedding pass, one set of per-row judge ratings), keyed so
        a study charges it once: ``seconds`` is what building it took, ``built_here`` whether
        this selection built it, ``judge_calls`` the judge calls it took (0 for none)."""
        self.shared_work[key] = {"key": key, "what": what, "seconds": float(seconds),
                                 "built_here": bool(built_here), "flops": flops,
                                 "judge_calls": int(judge_calls)}


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


NEEDS = ("proxy", "judge", "embeddings", "target")  # what a selector may need besides the pool


class Selector:
    config_cls: type[SelectorConfig] = SelectorConfig
    registry_name: str = "?"
    description: str = ""
    # what reports and `bench ls` say about the selector (results carry it: `meta()`)
    paper_name: str = ""  # the name a paper's table uses ("Superfiltering", "G-SNR")
    reference: str = ""  # the paper or code it follows (arXiv id, repo@commit)
    family: str = "method"  # baseline | method | ablation | published | control
    ablation_of: str | None = None  # the selector an ablation is a delta against (Table 2)
    ablation_label: str = ""  # e.g. "#1 G_s - G_t"
    report_rank: int = 50  # row order in tables (baselines first)
    needs: tuple[str, ...] = ()  # from NEEDS: a proxy model, a judge, embeddings, a target set
    cost_class: str = "free"  # free | cpu-seconds | proxy-forward | proxy-train | judge-calls

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
        """The select stage's identity: the selector, its config and its code (the source of
        every module that defines it, plugin files included: editing a selector recomputes
        its selections)."""
        return {"selector": self.registry_name, **to_dict(self.config),
                "code": code_identity(type(self))}

    def context_identity(self, ctx: SelectionContext) -> dict[str, Any]:
        """What this selection reads from the run besides the pool and its own config (the
        target model's tokenizer, the run's eval prompts, a target file, a judge), as values
        for the select stage's key: change one of them and the selection is recomputed.
        ``ctx`` carries the run's inputs (``judges`` may map names to None: load by name).
        Default: nothing (most selectors read only the pool and their config)."""
        return {}

    @classmethod
    def meta(cls) -> dict[str, Any]:
        """What a result records about its selector, so that reports need no registry."""
        return {"name": cls.registry_name, "paper_name": cls.paper_name or cls.registry_name,
                "family": cls.family, "ablation_of": cls.ablation_of,
                "ablation_label": cls.ablation_label, "report_rank": cls.report_rank,
                "needs": list(cls.needs), "cost_class": cls.cost_class, "reference": cls.reference}

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict[str, Any] | None:
        """Estimated selection work on a pool of ``n`` examples of ~``tokens`` tokens: a dict
        with ``what``, ``flops``, ``kind`` (train | proxy | forward: which throughput applies),
        ``shared`` (the name of work other selectors and ratios reuse: the plan counts it
        once) and ``judge_calls``; None when it is negligible."""
        return None

    def plan_problems(self, judges: dict[str, Any]) -> list[tuple[str, str]]:
        """What this selector needs that may be missing here, as (plan problem kind, message),
        checked by ``bench plan`` without computing (``judges``: the run's judges by name).
        Most selectors need nothing beyond their models, which the plan checks itself."""
        return []

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
        """Select, and record the cost the same way for every selector: ``own_seconds`` (this
        selection's work), the shared work it used (each with its key and build seconds; work
        built by this selection is not counted twice), ``selection_seconds`` = own + shared
        (what this selection costs on its own), the device, estimated FLOPs and judge calls."""
        t0 = time.perf_counter()
        sel = self.select(pool, ratio, ctx)
        wall = time.perf_counter() - t0
        sel.info.setdefault("budget", budget(ratio, len(pool)))
        built = sum(w["seconds"] for w in ctx.shared_work.values() if w["built_here"])
        own = max(0.0, wall - built)
        shared = sorted(ctx.shared_work.values(), key=lambda w: w["key"])
        sel.info["select_seconds"] = wall
        sel.info["selection_seconds"] = own + sum(w["seconds"] for w in shared)
        flops = sel.info.get("flops_est")
        if flops is None:  # the selector's own estimate, as `bench plan` shows it
            try:
                est = self.estimate(len(pool), mean_tokens(pool.rows, 4096), ctx.seed)
            except Exception:  # noqa: BLE001 - an estimate never fails a selection
                est = None
            flops = est.get("flops") if est else None
        sel.info["cost"] = {"own_seconds": own, "shared": shared, "device": ctx.device,
                            "selection_seconds": sel.info["selection_seconds"],
                            "judge_calls": int(ctx.notes.get("judge_calls", 0)),
                            "flops_est": flops}
        return sel


class ProfileSelector(Selector):
    """Base for selectors built on the shared gradient profile (config field ``profile``)."""

    needs = ("proxy",)
    cost_class = "proxy-train"

    @classmethod
    def test_params(cls, tiny_model: str) -> dict[str, Any]:
        return tiny_profile_params(tiny_model)

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict[str, Any] | None:
        p = self.config.profile
        P = model_params(p.proxy)
        if not P:
            return None
        return {"what": f"gradient profile of {p.proxy} ({p.members} members x {p.epochs} epochs)",
                "flops": profile_flops(P, n, min(tokens, p.max_length), p.members, p.epochs, p.record),
                "kind": "proxy", "shared": profile_key_name(p, seed)}


SELECTORS: Registry[type[Selector]] = Registry("selector")


def with_shared_proxy(config_cls: type, params: dict[str, Any] | None, proxy: Any) -> dict[str, Any]:
    """``selector_params`` with the run's shared proxy settings (:class:`ProxyConfig`) filled
    in: each set field goes to the selector config's same-named field (``model`` -> ``proxy``)
    at the top level **and** in its ``profile`` dataclass (GrADS-style has a top-level
    ``batch_size`` for its own pass and a profile: both get the shared value, so its profile
    is the same as G-SNR's); keys given in ``params`` win; fields the selector does not have
    are ignored. A selector with no proxy model (no ``proxy`` field, at the top or in its
    profile) gets nothing: the oracles' corruption ``record`` file is not the proxy layer's
    ``record`` mode, nor a random selector's batch size the proxy's."""
    out = copy.deepcopy(dict(params or {}))
    if proxy is None:
        return out
    hints = typing.get_type_hints(config_cls)
    top = {f.name for f in fields(config_cls)}
    prof_cls = hints.get("profile") if "profile" in top else None
    prof = {f.name for f in fields(prof_cls)} if prof_cls is not None and is_dataclass(prof_cls) else set()
    if "proxy" not in top and "proxy" not in prof:
        return out
    for key, value in to_dict(proxy).items():
        if value is None:
            continue
        name = "proxy" if key == "model" else key
        if name in top and name != "profile":
            out.setdefault(name, value)
        if name in prof:
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
