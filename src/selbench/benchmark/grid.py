"""`bench grid GRID.yaml`: selectors x ratios x pools x target models x regimes x seeds in
one command, on the shared stage cache.

A grid file (keys, all optional except ``selectors``)::

    base: [../default.yaml]       # RunConfig YAML files applied to every cell (relative paths)
    experiment: grid-smoke        # ONE experiment folder for the whole grid: stages are shared
    runs_dir: runs
    settings:                     # optional: named settings, each more config files / overrides
      - {name: alpaca-7b-lora, config: [paper/alpaca-llama2-7b-lora.yaml], set: {}}
    pools: [alpaca]               # optional lists crossed with the settings: data.pool,
    models: [smollm2-135m-instruct]   # model,
    regimes: [lora]               # train.method
    selectors:                    # a name, or {name, params, seeds, ratios, label}
      - {name: random, seeds: [0, 1]}
      - ifd
      - gsnr
    ratios: [0.05, 0.10]
    seeds: [0]                    # default seeds of a selector without its own
    judges: [offline-refsim-minilm]
    set: {proxy.record: train}    # --set style overrides applied to every cell

Cells are (setting, selector, seed, ratio); each runs as one :class:`Pipeline` run with a
single ratio, so a failure stops only that cell. Order: per setting, the full-data model
first (shared by every cell of the setting, whatever the seed: ``seed`` is the selection
seed; the training seed is ``train.seed``), then the cells selector by selector (the cells
of a proxy selector follow each other and share its cached gradient profile). A failed
cell's error is recorded in ``<runs>/<experiment>/grid/<grid name>.json`` and shown; the
grid goes on and returns non-zero at the end. A rerun skips every finished stage.
"""
from __future__ import annotations

import itertools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import ConfigError, RunConfig, build_config, load_yaml_layers

GRID_KEYS = {"base", "experiment", "runs_dir", "settings", "pools", "models", "regimes",
             "selectors", "ratios", "seeds", "judges", "set", "description"}


@dataclass
class Cell:
    setting: str
    selector: str
    label: str
    seed: int
    ratio: float
    cfg: RunConfig

    @property
    def name(self) -> str:
        return f"{self.setting} | {self.label} | r={self.ratio:g} | seed {self.seed}"


@dataclass
class Grid:
    name: str
    path: Path
    cells: list[Cell]
    settings: dict[str, RunConfig]  # setting name -> its config (selector-independent parts)
    spec: dict = field(default_factory=dict)

    @property
    def runs_root(self) -> Path:
        cfg = next(iter(self.settings.values()))
        return Path(cfg.runs_dir).expanduser().resolve() / cfg.experiment

    @property
    def status_path(self) -> Path:
        return self.runs_root / "grid" / f"{self.name}.json"


def _flat_sets(d: dict | None, prefix: str = "") -> list[str]:
    """{a: {b: 1}} or {"a.b": 1} -> ["a.b=1"] (--set strings)."""
    out = []
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("selector_params", "extra"):
            out += _flat_sets(v, key + ".")
        else:
            out.append(f"{key}={json.dumps(v)}")
    return out


def _as_list(v, where: str) -> list:
    if v is None:
        return [None]
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{where}: expected a non-empty list, got {v!r}")
    return v


def _selector_specs(spec: dict, where: str) -> list[dict]:
    sels = spec.get("selectors")
    if not sels:
        raise ConfigError(f"{where}: 'selectors' is required (a list of names or "
                          f"{{name, params, seeds, label}})")
    out = []
    for i, s in enumerate(sels):
        if isinstance(s, str):
            s = {"name": s}
        if not isinstance(s, dict) or "name" not in s:
            raise ConfigError(f"{where}: selectors[{i}]: expected a name or a mapping with 'name'")
        bad = set(s) - {"name", "params", "seeds", "label", "ratios"}
        if bad:
            raise ConfigError(f"{where}: selectors[{i}]: unknown key(s) {sorted(bad)} "
                              f"(known: name, params, seeds, ratios, label)")
        out.append({"name": s["name"], "params": s.get("params") or {},
                    "seeds": s.get("seeds"), "ratios": s.get("ratios"),
                    "label": s.get("label") or s["name"]})
    labels = [s["label"] for s in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: two selectors have the same label {labels}: give each a 'label'")
    return out


def load_grid(path: str | Path, overrides: list[str] | None = None) -> Grid:
    """Expand a grid YAML into cells (each a validated RunConfig). Errors name the file."""
    import copy

    from .. import config as config_mod

    real = config_mod.load_yaml_layers
    memo: dict = {}

    def cached_layers(p, _seen=()):  # each YAML file is read once per grid, not once per cell
        k = (str(Path(p).resolve()), _seen)
        if k not in memo:
            memo[k] = real(p, _seen)
        return copy.deepcopy(memo[k])

    config_mod.load_yaml_layers = cached_layers
    try:
        return _load_grid(path, overrides)
    finally:
        config_mod.load_yaml_layers = real


def _load_grid(path: str | Path, overrides: list[str] | None = None) -> Grid:
    from ..selectors import SELECTORS

    path = Path(path).resolve()
    spec = load_yaml_layers(path)
    where = str(path)
    bad = set(spec) - GRID_KEYS
    if bad:
        import difflib

        k = sorted(bad)[0]
        close = difflib.get_close_matches(k, sorted(GRID_KEYS), n=1)
        raise ConfigError(f"{where}: unknown grid key '{k}'" + (f"; did you mean '{close[0]}'?" if close else "")
                          + f" (known: {', '.join(sorted(GRID_KEYS))})")
    base = [str((path.parent / b).resolve()) for b in (spec.get("base") or [])]
    settings_spec = spec.get("settings") or [{"name": None}]
    sel_specs = _selector_specs(spec, where)
    ratios = spec.get("ratios")
    if not ratios:
        raise ConfigError(f"{where}: 'ratios' is required, e.g. [0.05, 0.10]")
    default_seeds = spec.get("seeds") or [0]
    common_sets = _flat_sets(spec.get("set")) + list(overrides or [])
    top = {}
    for k in ("experiment", "runs_dir"):
        if spec.get(k) is not None:
            top[k] = spec[k]
    if spec.get("judges"):
        top["judges"] = spec["judges"]
    cells: list[Cell] = []
    settings: dict[str, RunConfig] = {}
    for st in settings_spec:
        if not isinstance(st, dict):
            raise ConfigError(f"{where}: settings entries are mappings {{name, config, set}}")
        st_files = [str((path.parent / f).resolve()) for f in (st.get("config") or [])]
        for pool, model, regime in itertools.product(
                _as_list(spec.get("pools"), f"{where}: pools"),
                _as_list(spec.get("models"), f"{where}: models"),
                _as_list(spec.get("regimes"), f"{where}: regimes")):
            o = dict(top)
            if pool is not None:
                o["data.pool"] = pool
            if model is not None:
                o["model"] = model
            if regime is not None:
                o["train.method"] = regime
            sets = _flat_sets(st.get("set")) + common_sets
            parts = [st.get("name"), pool, model and Path(str(model)).name, regime]
            sname = "/".join(str(p) for p in parts if p) or "default"
            try:
                scfg = build_config(base + st_files, dict(o), sets)
            except ConfigError as e:
                raise ConfigError(f"{where}: setting {sname}: {e}") from None
            settings[sname] = scfg
            for s in sel_specs:
                SELECTORS.canonical(s["name"])  # did-you-mean before anything runs
                for seed in s["seeds"] or default_seeds:
                    for r in s["ratios"] or ratios:
                        oo = {**o, "selector": s["name"], "ratios": [float(r)], "seed": int(seed)}
                        ss = sets + ([f"selector_params={json.dumps(s['params'])}"]
                                     if s["params"] else [])
                        try:
                            cfg = build_config(base + st_files, oo, ss)
                        except ConfigError as e:
                            raise ConfigError(f"{where}: cell {sname}/{s['label']}/r={r}: {e}") from None
                        cells.append(Cell(sname, s["name"], s["label"], int(seed), float(r), cfg))
    roots = {(c.cfg.runs_dir, c.cfg.experiment) for c in cells}
    if len(roots) > 1:
        raise ConfigError(f"{where}: every cell must share one runs_dir/experiment (got {sorted(roots)}); "
                          f"set 'experiment' at the grid's top level")
    # validate selector params once per selector (cheap; raises naming the selector)
    from ..selectors import build_selector

    seen = set()
    for c in cells:
        k = json.dumps([c.cfg.selector, c.cfg.selector_params, str(c.cfg.proxy)], sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            build_selector(c.cfg.selector, c.cfg.selector_params, c.cfg.proxy)
    return Grid(path.stem, path, cells, settings, spec)


# --------------------------------------------------------------------------- plan
def cell_status(cell: Cell, pipe=None) -> tuple[str, dict]:
    """('done' | 'run', plan estimates) for one cell, without computing anything."""
    from ..plan import make_plan

    plan = make_plan(cell.cfg, pipeline=pipe)
    status = "done" if plan.stages and all(s.status == "done" for s in plan.stages) else "run"
    if plan.problems:
        status = "blocked"
    return status, {"plan": plan}


def plan_grid(grid: Grid) -> dict:
    """Which cells are done, which shared stages will run, estimated MDE per cell."""
    from ..leaderboard.stats import mde_pws
    from .pipeline import Pipeline

    rows, shared, problems = [], {}, []
    seeds_per = {}
    for c in grid.cells:
        seeds_per.setdefault((c.setting, c.label, c.ratio), set()).add(c.seed)
    for c in grid.cells:
        pipe = Pipeline(c.cfg, progress=False, log=lambda *_: None)
        status, info = cell_status(c, pipe)
        plan = info["plan"]
        for s in plan.stages:
            if s.stage == "train" and s.key.startswith("full-") or s.stage == "generate" and s.key.startswith("full-"):
                shared[f"{s.stage}/{s.key}"] = s.status
        for p in plan.problems:
            problems.append(f"{c.name}: {p}")
        n_prompts = (plan.estimates.get("generate") or {}).get("prompts_per_model")
        n_seeds = len(seeds_per[(c.setting, c.label, c.ratio)])
        proxy = plan.estimates.get("proxy") or {}
        rows.append({"cell": c.name, "status": status, "n_prompts": n_prompts, "n_seeds": n_seeds,
                     "mde": mde_pws(n_prompts, n_seeds) if n_prompts else None,
                     "proxy_flops": proxy.get("flops")})
    return {"cells": rows, "shared": shared, "problems": problems}


def render_grid_plan(grid: Grid, p: dict) -> str:
    n_done = sum(r["status"] == "done" for r in p["cells"])
    lines = [f"grid '{grid.name}' ({grid.path}): {len(grid.cells)} cells in {len(grid.settings)} "
             f"setting(s); {n_done} done, {len(grid.cells) - n_done} to run",
             f"runs folder: {grid.runs_root}"]
    for k, v in p["shared"].items():
        lines.append(f"  shared [{v:>4}] {k}  (full-data baseline, one per setting)")
    from ..plan import _fmt_flops

    for r in p["cells"]:
        mde = f"MDE ~{r['mde']:.2f} PWS" if r["mde"] else "MDE ?"
        proxy = f"; proxy ~{_fmt_flops(r['proxy_flops'])} (shared by its selectors)" if r.get("proxy_flops") else ""
        lines.append(f"  [{r['status']:>7}] {r['cell']}  ({r['n_prompts']} prompts x {r['n_seeds']} "
                     f"seed(s): {mde}{proxy})")
    lines.append("MDE = smallest PWS difference between two selectors of one cell that this many "
                 "prompts and seeds detect (alpha 0.05, power 0.8, no-pilot per-prompt variance "
                 "2/3 and seed sd 0.05); gaps below it are noise.")
    if p["problems"]:
        lines.append(f"{len(p['problems'])} problem(s) (these cells will fail):")
        lines += [f"  {x}" for x in p["problems"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- run
def _write_status(grid: Grid, status: dict) -> None:
    from ..runs import atomic_write_text

    grid.status_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(grid.status_path, json.dumps(status, indent=2, default=str))


def run_grid(grid: Grid, progress: bool = True, log: Callable[[str], None] = print,
             command: list[str] | None = None) -> dict:
    """Run every cell in dependency order; never stop on a failed cell. Returns the status
    dict (also written to ``grid.status_path``): cells with state ok | failed | skipped."""
    from .pipeline import Pipeline

    status: dict[str, Any] = {"grid": str(grid.path), "started": time.time(), "cells": {}}
    if grid.status_path.exists():
        try:
            status["previous"] = json.loads(grid.status_path.read_text()).get("cells", {})
        except json.JSONDecodeError:
            pass
    failed_baseline: dict[str, str] = {}
    # 1. one full-data model per setting (shared by every cell of that setting)
    for sname, scfg in grid.settings.items():
        first = next(c for c in grid.cells if c.setting == sname)
        t0 = time.perf_counter()
        log(f"[grid]   baseline {sname}")
        try:
            pipe = Pipeline(first.cfg, progress=progress, log=log)
            pipe.load_data()
            pipe.generate(pipe.train("full", None))
            status["cells"][f"{sname} | full-data baseline"] = {
                "state": "ok", "seconds": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001 - recorded, the grid goes on
            msg = f"{type(e).__name__}: {e}"
            failed_baseline[sname] = msg
            status["cells"][f"{sname} | full-data baseline"] = {
                "state": "failed", "error": msg, "traceback": traceback.format_exc(limit=8),
                "seconds": time.perf_counter() - t0}
            log(f"[grid]   FAILED baseline {sname}: {msg}")
        _write_status(grid, status)
    # 2. the cells
    for i, c in enumerate(grid.cells, 1):
        if c.setting in failed_baseline:
            status["cells"][c.name] = {"state": "skipped",
                                       "error": f"full-data baseline failed: {failed_baseline[c.setting]}"}
            continue
        log(f"[grid]   cell {i}/{len(grid.cells)}: {c.name}")
        t0 = time.perf_counter()
        try:
            res = Pipeline(c.cfg, progress=progress, log=log).run(
                (command or ["bench", "grid", str(grid.path)]) + [f"# cell {c.name}"])
            status["cells"][c.name] = {
                "state": "ok", "seconds": time.perf_counter() - t0,
                "pws": {r["judge"]: r["summary"]["pooled"]["pws"] for r in res}}
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {e}"
            status["cells"][c.name] = {"state": "failed", "error": msg,
                                       "traceback": traceback.format_exc(limit=8),
                                       "seconds": time.perf_counter() - t0}
            log(f"[grid]   FAILED {c.name}: {msg}")
        _write_status(grid, status)
    status["finished"] = time.time()
    status.pop("previous", None)
    _write_status(grid, status)
    return status


def render_summary(status: dict) -> str:
    cells = status["cells"]
    bad = {k: v for k, v in cells.items() if v["state"] != "ok"}
    lines = [f"grid summary: {len(cells) - len(bad)} ok, "
             f"{sum(v['state'] == 'failed' for v in bad.values())} failed, "
             f"{sum(v['state'] == 'skipped' for v in bad.values())} skipped"]
    for k, v in cells.items():
        if v["state"] == "ok":
            pws = ", ".join(f"{j} {p:.3f}" for j, p in (v.get("pws") or {}).items())
            lines.append(f"  ok      {k}" + (f"  PWS {pws}" if pws else "")
                         + f"  ({v.get('seconds', 0):.0f}s)")
    for k, v in bad.items():
        lines.append(f"  {v['state'].upper():<7} {k}: {v['error']}")
    return "\n".join(lines)


def dump_cells(grid: Grid) -> str:
    """YAML listing of the expanded cells (for tests and `bench grid --list`)."""
    return yaml.safe_dump([{"setting": c.setting, "selector": c.label, "seed": c.seed,
                            "ratio": c.ratio} for c in grid.cells], sort_keys=False)
