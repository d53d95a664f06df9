"""The Python API: the same runs as the CLI, from a script or a notebook.

    import selbench

    # selection alone: the subset and every example's score, no training
    sel = selbench.select("ifd", ratio=0.05, pool="alpaca", pool_size=200)
    sel.indices[:5], sel.scores[sel.indices[:5]]

    # the whole benchmark (plan checks first), results as dicts
    results = selbench.run(selector="random", ratios=[0.05], judges=["offline-refsim-minilm"])
    results[0]["summary"]["pooled"]["pws"]

    # what a run would do, without computing
    print(selbench.plan_text(config="configs/paper/alpaca-llama2-7b-lora.yaml", selector="gsnr"))

Keyword arguments are config keys (dotted paths for nested ones: ``**{"train.epochs": 2}``);
``config`` is one YAML path or a list (default: the smoke config)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .benchmark.pipeline import Pipeline
from .config import ProxyConfig, RunConfig, build_config, configs_root, from_dict
from .data import Pool, load_pool, validate_rows
from .hardware import pick_device
from .benchmark.plan import make_plan, render_plan
from .selectors import SelectionContext, build_selector


def _config(config=None, **overrides):
    files = [config] if isinstance(config, (str, Path)) else list(config or [configs_root() / "default.yaml"])
    flat = {}
    for k, v in overrides.items():
        if v is None:
            continue
        key = {"ratio": "ratios", "pool": "data.pool", "pool_size": "data.pool_size",
               "data_dir": "data.data_dir", "judge": "judges"}.get(k, k)
        if key == "ratios" and not isinstance(v, (list, tuple)):
            v = [v]
        if key == "judges" and isinstance(v, str):
            v = [v]
        flat[key] = list(v) if isinstance(v, tuple) else v
    return build_config([str(f) for f in files], flat)


def plan_text(config=None, **overrides) -> str:
    """The rendered plan of a run (nothing is computed)."""
    cfg = _config(config, **overrides)
    return render_plan(make_plan(cfg), cfg)


def run(config=None, progress: bool = True, **overrides) -> list[dict]:
    """Run the benchmark (select -> train -> generate -> judge) and return the judge results."""
    return Pipeline(_config(config, **overrides), progress=progress).run(["selbench.run"])


def select(selector: str, ratio: float = 0.05, pool: Any = "alpaca", pool_size: int | None = None,
           seed: int = 0, params: dict | None = None, proxy: dict | None = None,
           data_dir: str | None = None, device: str = "auto", progress: bool = False,
           target_model: str | None = None):
    """Run one selector on a pool and return its :class:`~selbench.selectors.Selection`
    (``indices`` in rank order, ``scores`` for every pool example, ``info``). `pool` is a
    known name, a file path, a Hugging Face id, or a list of Alpaca-format dicts.
    ``target_model`` is the model the subset is for (its tokenizer counts tokens, e.g. for
    ``length``; default: the default of ``RunConfig.model``)."""

    if isinstance(pool, list):
        rows, skipped = validate_rows(list(enumerate(pool, 1)), "select(pool=...)")
        pool = Pool("rows", rows, "python", skipped)
    elif not isinstance(pool, Pool):
        pool = load_pool(pool, data_dir, pool_size, seed)
    sel = build_selector(selector, params, from_dict(ProxyConfig, proxy or {}, "proxy"))
    if target_model is None:
        target_model = RunConfig.__dataclass_fields__["model"].default
    ctx = SelectionContext(seed=seed, device=pick_device(device), data_dir=data_dir,
                           progress=progress, log=print if progress else (lambda m: None),
                           target_model=target_model)
    out = sel.run(pool, ratio, ctx)
    out.info["ids"] = [pool.rows[i]["id"] for i in out.indices]
    return out
