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

import copy
import itertools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import ConfigError, RunConfig, build_config, load_yaml_layers, to_dict
from ..data import DataNotFound, PoolError
from ..estimates import fmt_hours
from ..judges import load_judge
from ..leaderboard.stats import PRIOR, Variance, mde
from ..registry import RegistryError, suggest
from ..runs import atomic_write_text
from ..selectors import SELECTORS, build_selector
from .pipeline import Pipeline
from .plan import make_plan
from .stages import load_run_data

GRID_KEYS = {"base", "experiment", "runs_dir", "settings", "pools", "models", "regimes",
             "selectors", "ratios", "seeds", "judges", "set", "description", "study"}


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


def reversed_order(grid: Grid) -> Grid:
    """The same grid with its cells in reverse order and its own status file
    (``<name>-reverse.json``): run it as a second process next to the forward one (same
    experiment folder) and the two work from both ends; the stage locks make every shared
    stage (the full-data model, a profile, a cell the other process is on) run once."""
    return Grid(f"{grid.name}-reverse", grid.path, list(reversed(grid.cells)), grid.settings, grid.spec)


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
    """Expand a grid YAML into cells (each a validated RunConfig). Errors name the file.
    Each YAML file is read once per grid, not once per cell."""
    memo: dict = {}

    def cached_layers(p, _seen=()):
        k = (str(Path(p).resolve()), _seen)
        if k not in memo:
            memo[k] = load_yaml_layers(p, _seen)
        return copy.deepcopy(memo[k])

    return _load_grid(path, overrides, cached_layers)


def _load_grid(path: str | Path, overrides: list[str] | None, loader) -> Grid:
    path = Path(path).resolve()
    spec = loader(path)
    where = str(path)
    bad = set(spec) - GRID_KEYS
    if bad:
        k = sorted(bad)[0]
        raise ConfigError(f"{where}: unknown grid key '{k}'{suggest(k, GRID_KEYS)}"
                          f" (known: {', '.join(sorted(GRID_KEYS))})")
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
                scfg = build_config(base + st_files, dict(o), sets, loader=loader)
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
                            cfg = build_config(base + st_files, oo, ss, loader=loader)
                        except ConfigError as e:
                            raise ConfigError(f"{where}: cell {sname}/{s['label']}/r={r}: {e}") from None
                        cells.append(Cell(sname, s["name"], s["label"], int(seed), float(r), cfg))
    roots = {(c.cfg.runs_dir, c.cfg.experiment) for c in cells}
    if len(roots) > 1:
        raise ConfigError(f"{where}: every cell must share one runs_dir/experiment (got {sorted(roots)}); "
                          f"set 'experiment' at the grid's top level")
    # validate selector params once per selector (cheap; raises naming the selector)
    seen = set()
    for c in cells:
        k = json.dumps([c.cfg.selector, c.cfg.selector_params, str(c.cfg.proxy)], sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            build_selector(c.cfg.selector, c.cfg.selector_params, c.cfg.proxy)
    return Grid(path.stem, path, cells, settings, spec)


# --------------------------------------------------------------------------- plan
def plan_grid(grid: Grid) -> dict:
    """Plan every cell without computing: per cell its status and plan; over the grid the
    distinct stages still to run (a stage shared by several cells counts once), their
    estimated hours and judge cost, the planned MDE per setting, and each distinct problem
    once with the cells it touches. The pool and eval sets of a setting are loaded once."""
    data_cache: dict[str, Any] = {}
    judge_cache: dict[str, Any] = {}
    cells, stages, problems = [], {}, {}
    seeds_per: dict[tuple, set] = {}
    var = grid_variance(grid)
    for c in grid.cells:
        seeds_per.setdefault((c.setting, c.label, c.ratio), set()).add(c.seed)
    for c in grid.cells:
        dk = json.dumps(to_dict(c.cfg.data), sort_keys=True)
        if dk not in data_cache:
            try:
                data_cache[dk] = load_run_data(c.cfg)
            except (DataNotFound, PoolError, OSError, ValueError) as e:
                data_cache[dk] = e  # loaded (and failed) once: every cell reports it
        data = data_cache[dk]
        if isinstance(data, Exception):
            data_error, data = data, None
        else:
            data_error = None
        judges = {}
        for j in c.cfg.judges:
            if j not in judge_cache:
                try:
                    judge_cache[j] = load_judge(j)
                except (ConfigError, RegistryError, ValueError):
                    judge_cache[j] = None
            if judge_cache[j] is not None:
                judges[j] = judge_cache[j]
        plan = make_plan(c.cfg, data=data, judges=judges if len(judges) == len(c.cfg.judges) else None,
                         data_error=data_error)
        status = "blocked" if plan.problems else (
            "done" if plan.stages and all(s.status == "done" for s in plan.stages) else "run")
        for s in plan.stages:
            k = f"{s.stage}/{s.key}"
            if k not in stages or (s.seconds or 0) > (stages[k].seconds or 0):
                stages[k] = s
        for p in plan.problems:
            problems.setdefault(str(p), []).append(c.name)
        n_prompts = (plan.estimates.get("generate") or {}).get("prompts_per_model")
        n_seeds = len(seeds_per[(c.setting, c.label, c.ratio)])
        cells.append({"cell": c.name, "setting": c.setting, "status": status, "plan": plan,
                      "n_prompts": n_prompts, "n_seeds": n_seeds,
                      "mde": mde(n_prompts, n_seeds, var) if n_prompts else None})
    to_run = [s for s in stages.values() if s.status != "done"]
    by_stage: dict[str, int] = {}
    for s in to_run:
        kind = s.stage.split("/")[0]
        by_stage[kind] = by_stage.get(kind, 0) + 1
    secs = [s.seconds for s in to_run if s.seconds is not None]
    exp = mx = None
    seen_judge = set()
    for c in cells:
        for s in c["plan"].to_run:
            if s.stage.startswith("judge/") and f"{s.stage}/{s.key}" not in seen_judge:
                seen_judge.add(f"{s.stage}/{s.key}")
                e, m = judge_cost_of_stage(c["plan"], s)
                if e is not None:
                    exp, mx = (exp or 0) + e, (mx or 0) + m
    return {"cells": cells, "stages": len(stages), "to_run": len(to_run), "by_stage": by_stage,
            "seconds": sum(secs) if secs else None, "judge_cost": (exp, mx),
            "problems": problems, "variance": var}


def grid_variance(grid: Grid) -> Variance:
    """The variance components the grid's MDE is planned with: the grid file's
    ``study.pilot`` (measured on a pilot run: diff, seed_share, shift, source), else the prior."""
    pilot = (grid.spec.get("study") or {}).get("pilot")
    if not pilot:
        return PRIOR
    try:
        return Variance(float(pilot["diff"]), float(pilot["seed_share"]), float(pilot["shift"]),
                        str(pilot.get("source", "the grid's study.pilot")))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{grid.path}: study.pilot needs numbers diff, seed_share and shift "
                          f"({type(e).__name__}: {e})") from None


def judge_cost_of_stage(plan, stage) -> tuple[float | None, float | None]:
    e = plan.estimates
    n_prompts = (e.get("generate") or {}).get("prompts_per_model") or 0
    for j in e.get("judges", []):
        if stage.stage == f"judge/{j['judge']}" and "cost_usd_per_call" in j:
            return 2 * n_prompts * j["cost_usd_per_call"], 2 * n_prompts * j["max_cost_usd_per_call"]
    return None, None


def render_grid_plan(grid: Grid, p: dict, verbose: bool = False) -> str:
    cells = p["cells"]
    n_done = sum(r["status"] == "done" for r in cells)
    dev = next((r["plan"].estimates.get("device_class") for r in cells), "?")
    lines = [f"grid '{grid.name}' ({grid.path}): {len(cells)} cells in {len(grid.settings)} "
             f"setting(s); {n_done} done, {len(cells) - n_done} to run",
             f"runs folder: {grid.runs_root}"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(p["by_stage"].items()))
    exp, mx = p["judge_cost"]
    lines.append(f"stages: {p['stages']} distinct (shared stages counted once), {p['to_run']} to "
                 f"run ({kinds or 'none'}); ~{fmt_hours(p['seconds'])} on {dev} (estimate)"
                 + (f"; judge cost ~${exp:.2f} (at most ${mx:.2f})" if exp is not None else ""))
    lines.append("per setting: cells done/total, prompts x seeds, planned MDE (PWS):")
    for setting in grid.settings:
        rows = [r for r in cells if r["setting"] == setting]
        done = sum(r["status"] == "done" for r in rows)
        mdes = sorted({(r["n_prompts"], r["n_seeds"], r["mde"]) for r in rows if r["mde"]},
                      key=lambda x: (x[1], x[0]))
        mde = "; ".join(f"{n} x {k}: {m:.2f}" for n, k, m in mdes) or "?"
        lines.append(f"  {setting}: {done}/{len(rows)} done; {mde}")
    if verbose:
        for r in cells:
            mde = f"MDE ~{r['mde']:.2f} PWS" if r["mde"] else "MDE ?"
            lines.append(f"  [{r['status']:>7}] {r['cell']}  ({r['n_prompts']} prompts x "
                         f"{r['n_seeds']} seed(s): {mde})")
    v = p.get("variance") or PRIOR
    lines.append(f"MDE = smallest PWS difference between two selectors of one setting and ratio "
                 f"that this many prompts and seeds detect (alpha 0.05, power 0.8; "
                 f"selbench.leaderboard.stats.mde, as the study computes it); variance "
                 f"components sigma_d^2={v.diff:.3f}, rho={v.seed_share:.2f}, "
                 f"tau_g^2={v.shift:.4f} ({v.source}); gaps below it are noise.")
    if p["problems"]:
        lines.append(f"{len(p['problems'])} distinct problem(s):")
        for msg, touched in p["problems"].items():
            lines.append(f"  {msg}  ({len(touched)} of {len(cells)} cells, e.g. {touched[0]})")
    else:
        lines.append("no problems: ready to run")
    return "\n".join(lines)


# --------------------------------------------------------------------------- run
def _write_status(grid: Grid, status: dict) -> None:
    grid.status_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(grid.status_path, json.dumps(status, indent=2, default=str))


def run_grid(grid: Grid, progress: bool = True, log: Callable[[str], None] = print,
             command: list[str] | None = None) -> dict:
    """Run every cell in dependency order; never stop on a failed cell. Returns the status
    dict (also written to ``grid.status_path``): cells with state ok | failed | skipped."""
    status: dict[str, Any] = {"grid": str(grid.path), "started": time.time(), "cells": {},
                              "planned": [f"{s} | full-data baseline" for s in grid.settings]
                              + [c.name for c in grid.cells]}
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
