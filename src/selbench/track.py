"""The ground-truth track: how well does a selector's ranking separate planted corruption
from clean rows? No training, no judge: it runs ``selector.run`` on a corrupted pool
(:mod:`selbench.corrupt`) and compares what it scores and picks with the record.

Per selector, with bootstrap 95% CIs:

- **AUROC** (clean = positive, per kind and overall): the probability that a random clean
  row scores above a random corrupted one, ties counting 1/2 (the Mann-Whitney U / (n1 n0)
  of :func:`auroc`). 1 = every clean row above every corrupted one, 0.5 = no signal (what
  random gets in expectation), 0 = corrupted first. A per-kind AUROC compares the clean rows
  with that kind's rows only. The scores are ``Selection.scores`` of the selector's run at
  ratio 1 (its whole ranking), where every row the selector does not take even at ratio 1
  (a filter: IFD >= 1 or NaN) counts as NaN; NaN ranks below every number and NaNs tie
  with each other (also ``-inf``), as in :func:`~selbench.selectors.base.rank_by_score`.
  The table counts the rows without a usable score, NaN or never taken (``unranked``). ``raw_scores`` skips the ratio-1 run and uses
  the scores of the first ratio's run as the selector returned them (NaN still last).
- **Clean share** at each ratio: the share of clean rows in the selection the selector
  really makes at that ratio (``Selection.indices``; a filter may make it short, the
  table says by how much), next to what random gets: a uniform random subset's expected
  clean share is the pool's clean fraction, and random's own run is a row of the table.
- **Selected by kind**: how many rows of each kind the selection holds, and per kind the
  selection-rate ratio (kind rows selected / kind rows) / (clean rows selected / clean
  rows): 1 = no preference, 0 = that kind is never taken.

Bootstrap (``n_boot`` resamples, percentile intervals, seeded, the same resamples for every
selector): AUROC resamples clean and corrupted rows separately (stratified, so every
resample has both); the clean share resamples the selected rows. The intervals are over
the rows of this one corrupted pool with the scores held fixed: they do not cover a new
corruption seed or a new selector seed.

Selections are stage-cached like ``bench run``'s (``<out>/select/<selector>-r<ratio>-s<seed>-
<h8>``, keyed by the selector's config and code, ratio, seed and pool; IFD's scores are shared
across ratios through ``<out>/shards``): rerunning with another selector only computes that
one. Output: ``track.md``, ``track.csv`` (long format) and ``track.json`` in the out folder.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import ConfigError, stable_hash
from .corrupt import (CLEAN, CorruptionRecord, make_corrupted_file, parse_kinds,
                      record_path_for)
from .data import DataNotFound, Pool, PoolError, load_pool
from .hardware import pick_device
from .runs import RunDir, atomic_write_text, stage_key
from .selectors import SELECTORS, SelectionContext, build_selector

CONTROLS = ("random", "oracle-clean", "oracle-corrupt")
DEFAULT_FRACTION = 0.3
TRACK_SEED_TAG = 6113  # bootstrap streams: default_rng([boot_seed, TRACK_SEED_TAG, ...])


# --------------------------------------------------------------------------- metrics
def _groups(scores) -> tuple[np.ndarray, int]:
    """Per row the index of its score among the sorted distinct scores (NaN = -inf)."""
    s = np.asarray(scores, dtype=np.float64)
    key = np.where(np.isnan(s), -np.inf, s)
    uniq, inv = np.unique(key, return_inverse=True)
    return inv.reshape(-1), len(uniq)


def _auc_from_counts(P: np.ndarray, N: np.ndarray) -> np.ndarray:
    """AUROC from per-score-group counts of positives ``P`` and negatives ``N`` (last axis =
    groups, ascending): sum_g P_g (negatives below g + N_g / 2) / (n_pos n_neg)."""
    below = np.cumsum(N, axis=-1) - N
    num = (P * (below + 0.5 * N)).sum(axis=-1)
    den = P.sum(axis=-1) * N.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def auroc(scores, positive) -> float:
    """P(score of a positive row > score of a negative row) + 1/2 P(equal): the normalised
    Mann-Whitney U. NaN scores rank below every number (tied with -inf and each other).
    NaN when either class is empty."""
    pos = np.asarray(positive, dtype=bool)
    g, G = _groups(scores)
    P = np.bincount(g[pos], minlength=G).astype(np.float64)
    N = np.bincount(g[~pos], minlength=G).astype(np.float64)
    return float(_auc_from_counts(P, N))


def auroc_bootstrap(scores, positive, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``n_boot`` stratified bootstrap AUROCs: positives and negatives resampled separately
    (each with replacement, at its own count). The resamples depend only on the two counts
    and ``seed``, so two selectors scored on the same rows see the same resamples."""
    pos = np.asarray(positive, dtype=bool)
    g, G = _groups(scores)
    gp, gn = g[pos], g[~pos]
    if not len(gp) or not len(gn) or n_boot <= 0:
        return np.full(max(n_boot, 0), np.nan)
    rng = np.random.default_rng([int(seed), TRACK_SEED_TAG, len(gp), len(gn)])
    out = np.empty(n_boot)
    step = max(1, 2_000_000 // (len(gp) + len(gn)))  # bound the memory of one block
    for b0 in range(0, n_boot, step):
        b = min(step, n_boot - b0)
        ip = gp[rng.integers(0, len(gp), size=(b, len(gp)))]
        iN = gn[rng.integers(0, len(gn), size=(b, len(gn)))]
        off = (np.arange(b) * G)[:, None]
        P = np.bincount((ip + off).ravel(), minlength=b * G).reshape(b, G).astype(np.float64)
        N = np.bincount((iN + off).ravel(), minlength=b * G).reshape(b, G).astype(np.float64)
        out[b0:b0 + b] = _auc_from_counts(P, N)
    return out


def share(flags) -> float:
    """The share of True among ``flags`` (NaN when empty)."""
    f = np.asarray(flags, dtype=bool)
    return float(f.mean()) if len(f) else float("nan")


def share_bootstrap(flags, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap shares: the flags resampled with replacement."""
    f = np.asarray(flags, dtype=np.float64)
    if not len(f) or n_boot <= 0:
        return np.full(max(n_boot, 0), np.nan)
    rng = np.random.default_rng([int(seed), TRACK_SEED_TAG, 1, len(f)])
    return f[rng.integers(0, len(f), size=(n_boot, len(f)))].mean(axis=1)


def percentile_ci(boots, level: float = 0.95) -> tuple[float, float]:
    b = np.asarray(boots, dtype=np.float64)
    b = b[np.isfinite(b)]
    if not len(b):
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(b, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def _est(value: float, boots) -> dict:
    lo, hi = percentile_ci(boots)
    return {"value": float(value), "lo": lo, "hi": hi}


# --------------------------------------------------------------------------- the pool
def _is_corrupted_file(pool_arg: str) -> bool:
    p = Path(pool_arg).expanduser()
    return p.is_file() and record_path_for(p).is_file()


def default_out_dir(runs_dir: str, pool_arg: str, pool_size: int | None, sample_seed: int,
                    fraction: float | None, kinds: list[str] | None, seed: int) -> Path:
    """``<runs>/track/corruption-<pool>-<n>-<h8>``: one folder per pool and corruption."""
    if _is_corrupted_file(pool_arg):
        ident = [str(Path(pool_arg).expanduser().resolve()), pool_size, sample_seed, seed]
    else:
        fraction = DEFAULT_FRACTION if fraction is None else float(fraction)
        ident = [pool_arg, pool_size, sample_seed, fraction, parse_kinds(kinds), seed]
    stem = Path(pool_arg).stem if pool_arg.endswith((".json", ".jsonl")) else pool_arg
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)[:40]
    n = f"-n{pool_size}" if pool_size else ""
    return Path(runs_dir).expanduser() / "track" / f"corruption-{stem}{n}-{stable_hash(*ident)}"


def prepare_pool(pool_arg: str, out_dir: Path, data_dir: str | None = None,
                 pool_size: int | None = None, sample_seed: int = 0,
                 fraction: float | None = None, kinds=None, seed: int = 0,
                 log: Callable[[str], None] = print) -> tuple[Pool, CorruptionRecord]:
    """The corrupted pool the track runs on, with its record.

    A pool file with a record next to it (made by ``bench corrupt``) is used as it is (a
    seeded sample with ``pool_size``). Any other pool (a known name, a file, a hub id) is
    loaded, sampled and corrupted into ``<out>/pool/corrupted.json``; a second run with the
    same settings reuses that file, other settings in the same folder are an error."""
    if _is_corrupted_file(pool_arg):
        if fraction is not None or kinds is not None:
            raise ConfigError(f"{pool_arg} is already a corrupted pool (its record "
                              f"{record_path_for(pool_arg).name} is next to it): drop "
                              f"--fraction / --kinds, or give the clean pool")
        pool = load_pool(pool_arg, data_dir, pool_size, sample_seed)
        record = CorruptionRecord.read(record_path_for(pool_arg))
        return pool, record
    fraction = DEFAULT_FRACTION if fraction is None else fraction
    kinds = parse_kinds(kinds)
    target = Path(out_dir) / "pool" / "corrupted.json"
    clean = load_pool(pool_arg, data_dir, pool_size, sample_seed)
    if target.exists():
        record = CorruptionRecord.read(record_path_for(target))
        d = record.data
        src = d.get("source") or {}
        want = (float(fraction), kinds, int(seed), clean.fingerprint())
        have = (d.get("fraction"), d.get("kinds"), d.get("seed"), src.get("fingerprint"))
        if want != have:
            raise ConfigError(f"{target} was made with other settings (fraction, kinds, seed "
                              f"or pool: {have[:3]}); give another --out")
        log(f"[track]  reusing the corrupted pool {target}")
    else:
        _, _, rec = make_corrupted_file(clean, target, fraction, kinds, seed)
        log(f"[track]  corrupted {rec['n_corrupted']} of {rec['n_rows']} rows of "
            f"{clean.describe()} -> {target}")
    pool = load_pool(str(target))
    return pool, CorruptionRecord.read(record_path_for(target))


# --------------------------------------------------------------------------- the track
def _select(rd: RunDir, pool: Pool, pool_key: dict, name: str, params: dict | None,
            ratio: float, seed: int, ctx_kw: dict, log) -> dict:
    """One selection through the stage cache: {'indices', 'scores', 'info'}."""
    selector = build_selector(name, params)
    # what the selection reads besides the pool: the same rule as a run's select key
    context = selector.context_identity(SelectionContext(
        seed=seed, data_dir=ctx_kw.get("data_dir"), eval_items=ctx_kw.get("eval_items", {}),
        target_model=ctx_kw.get("target_model"), judges=ctx_kw.get("judges", {})))
    key = stage_key("select", f"{selector.name}-r{ratio:g}-s{seed}", selector.cache_config(),
                    ratio, seed, pool_key, *([context] if context else []))

    def build(tmp: Path) -> None:
        ctx = SelectionContext(seed=seed, run_dir=rd, pool_key=stable_hash(pool_key, n=16),
                               shard_root=rd.shard_root, **ctx_kw)
        sel = selector.run(pool, ratio, ctx)
        np.save(tmp / "scores.npy", np.asarray(sel.scores, dtype=np.float64))
        info = {**sel.info, **ctx.notes, "selector": selector.name, "ratio": ratio,
                "seed": seed, "pool_size": len(pool), "selector_meta": selector.meta()}
        (tmp / "subset.json").write_text(json.dumps(
            {"indices": [int(i) for i in sel.indices],
             "ids": [pool.rows[i]["id"] for i in sel.indices]}))
        (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str))

    folder = rd.cached(key, build, selector.cache_config(), log=log)
    subset = json.loads((folder / "subset.json").read_text())
    info = json.loads((folder / "info.json").read_text())
    return {"indices": subset["indices"], "scores": np.load(folder / "scores.npy"),
            "info": info, "key": key.key}


def selector_list(names, controls: bool = True) -> list[str]:
    """Canonical selector names, the controls (random and the two oracles) first unless
    ``controls`` is off; an unknown name is an error (with a did-you-mean)."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names or [])]
    out = [SELECTORS.canonical(n) for n in items if n]
    if controls:
        out = [c for c in CONTROLS if c not in out] + out
    if not out:
        raise ConfigError("no selector given (--selectors random,ifd,...)")
    return list(dict.fromkeys(out))


def run_corruption_track(pool: Pool, record: CorruptionRecord, selectors: list[str],
                         ratios: list[float], out_dir: Path, seed: int = 0,
                         n_boot: int = 1000, params: dict[str, dict] | None = None,
                         raw_scores: bool = False, device: str = "auto",
                         data_dir: str | None = None, log: Callable[[str], None] = print,
                         progress: bool = False, target_model: str | None = None,
                         eval_items: dict[str, list[dict]] | None = None) -> dict:
    """Run every selector on the corrupted pool and measure it against the record.

    ``target_model`` (a tokenizer for ``length``) and ``eval_items`` (the target prompts of
    ``dsir`` / ``embed-target``) are handed to the selectors as a run would; both are part
    of the selections' cache keys."""
    t_start = time.perf_counter()
    ratios = sorted(dict.fromkeys(float(r) for r in ratios))
    for r in ratios:
        if not (0.0 < r <= 1.0):
            raise ConfigError(f"ratio {r:g} is outside (0, 1]")
    kinds_of = np.array(record.kinds_of(pool), dtype=object)
    clean = kinds_of == CLEAN
    n, n_clean = len(pool), int(clean.sum())
    if n_clean == 0 or n_clean == n:
        raise PoolError(f"pool {pool.source}: {n - n_clean} of {n} rows corrupted; the track "
                        f"needs both clean and corrupted rows")
    kinds = [k for k in record.kinds if (kinds_of == k).any()]
    out_dir = Path(out_dir)
    rd = RunDir(out_dir)
    pool_key = {"pool": str(Path(pool.source).name), "fingerprint": pool.fingerprint(), "n": n}
    ctx_kw = {"device": pick_device(device), "data_dir": data_dir, "progress": progress,
              "log": log if progress else (lambda m: None), "target_model": target_model,
              "eval_items": dict(eval_items or {})}
    params = params or {}
    stage_log = (lambda m: log(f"[track]  {m.strip()}"))
    results = []
    for name in selectors:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"name": name, **{k: v for k, v in SELECTORS.get(name).meta().items()
                                                 if k in ("paper_name", "family", "cost_class")}}
        try:
            runs = {r: _select(rd, pool, pool_key, name, params.get(name), r, seed, ctx_kw,
                               stage_log) for r in ratios}
            if raw_scores:
                scores = np.asarray(runs[ratios[0]]["scores"], dtype=np.float64)
            else:
                full = runs.get(1.0) or _select(rd, pool, pool_key, name, params.get(name), 1.0,
                                                seed, ctx_kw, stage_log)
                taken = np.zeros(n, dtype=bool)
                taken[np.asarray(full["indices"], dtype=np.int64)] = True
                scores = np.where(taken, np.asarray(full["scores"], dtype=np.float64), np.nan)
            unranked = np.isnan(scores)
        except (ConfigError, PoolError, DataNotFound, ValueError, RuntimeError, OSError,
                KeyError) as e:
            entry["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
            log(f"[track]  {name}: failed: {entry['error']}")
            results.append(entry)
            continue
        entry["unranked"] = {"clean": int((unranked & clean).sum()),
                             "corrupted": int((unranked & ~clean).sum())}
        auc = {"overall": _est(auroc(scores, clean),
                               auroc_bootstrap(scores, clean, n_boot, seed=0))}
        auc["overall"].update(n_clean=n_clean, n_corrupted=n - n_clean)
        for k in kinds:
            m = clean | (kinds_of == k)
            auc[k] = _est(auroc(scores[m], clean[m]),
                          auroc_bootstrap(scores[m], clean[m], n_boot, seed=0))
            auc[k].update(n_clean=n_clean, n_corrupted=int((kinds_of == k).sum()))
        entry["auroc"] = auc
        entry["ratios"] = []
        for r in ratios:
            idx = np.asarray(runs[r]["indices"], dtype=np.int64)
            info = runs[r]["info"]
            flags = clean[idx]
            sel_clean = int(flags.sum())
            by_kind = {}
            for k in [CLEAN, *kinds]:
                nk = int((kinds_of == k).sum())
                sk = int((kinds_of[idx] == k).sum())
                rate = sk / nk if nk else float("nan")
                base = sel_clean / n_clean if sel_clean else float("nan")
                by_kind[k] = {"selected": sk, "pool": nk,
                              "rate_ratio": rate / base if base and base == base else float("nan")}
            entry["ratios"].append({
                "ratio": r, "budget": int(info.get("budget", len(idx))), "n_selected": len(idx),
                "short_by": int(info.get("short_by", 0) or 0),
                "clean_share": _est(share(flags), share_bootstrap(flags, n_boot, seed=0)),
                "random_expects": n_clean / n, "by_kind": by_kind,
                "selection_seconds": info.get("selection_seconds"), "select_key": runs[r]["key"]})
        entry["seconds"] = time.perf_counter() - t0
        log(f"[track]  {name}: AUROC {auc['overall']['value']:.3f}; clean share "
            + ", ".join(f"r={x['ratio']:g} {x['clean_share']['value']:.3f}"
                        for x in entry["ratios"]) + f" ({entry['seconds']:.1f}s)")
        results.append(entry)
    rs = record.summary()
    return {"track": "corruption", "pool": {"source": pool.source, "n": n,
                                           "fingerprint": pool.fingerprint(),
                                           "description": pool.describe()},
            "record": {**rs, "path": str(record.path) if record.path else None},
            "clean_fraction": n_clean / n, "n_clean": n_clean, "n_corrupted": n - n_clean,
            "kinds": kinds, "kind_counts": {k: int((kinds_of == k).sum()) for k in kinds},
            "kind_definitions": record.data.get("kind_definitions", {}),
            "settings": {"ratios": ratios, "seed": seed, "n_boot": n_boot,
                         "raw_scores": raw_scores, "selectors": list(selectors),
                         "params": params, "out": str(out_dir), "target_model": target_model,
                         "eval_sets": {k: len(v) for k, v in (eval_items or {}).items()}},
            "selectors": results, "wall_seconds": time.perf_counter() - t_start}


# --------------------------------------------------------------------------- output
def _ci(e: dict | None, digits: int = 3) -> str:
    if not e or e.get("value") is None or not math.isfinite(e["value"]):
        return "-"
    v, lo, hi = e["value"], e.get("lo"), e.get("hi")
    if lo is None or not math.isfinite(lo):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def verdict(auc: dict) -> str:
    """What the AUROC's CI says: clean ranked higher / corrupted ranked higher / no signal."""
    lo, hi = auc.get("lo"), auc.get("hi")
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    if lo > 0.5:
        return "clean first"
    if hi < 0.5:
        return "CORRUPTED first"
    return "no signal"


def render_markdown(res: dict) -> str:
    ratios = res["settings"]["ratios"]
    kinds = res["kinds"]
    cf = res["clean_fraction"]
    rec = res["record"]
    lines = [f"# Corruption track: {res['pool']['source']}", "",
             f"{res['n_corrupted']} of {res['pool']['n']} rows corrupted "
             f"({1 - cf:.1%}; " + ", ".join(f"{k} {res['kind_counts'][k]}" for k in kinds)
             + f"), corruption seed {rec.get('seed')}, selection seed {res['settings']['seed']}, "
             f"{res['settings']['n_boot']} bootstrap resamples (95% percentile CIs over rows, "
             f"scores fixed). Random expects AUROC 0.5 and a clean share of {cf:.3f} (the "
             f"pool's clean fraction).", ""]
    head = ["selector", "family", "AUROC clean vs corrupted [95% CI]", "verdict",
            *[f"clean share r={r:g} [95% CI]" for r in ratios], "unranked (clean/corr.)", "seconds"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rand_row = ["*random expects*", "", "0.500", "", *[f"{cf:.3f}" for _ in ratios], "", ""]
    lines.append("| " + " | ".join(rand_row) + " |")
    failed = []
    for s in res["selectors"]:
        if "error" in s:
            failed.append(s)
            continue
        shares = []
        for x in s["ratios"]:
            t = _ci(x["clean_share"])
            if x["short_by"]:
                t += f" ({x['n_selected']} of {x['budget']})"
            shares.append(t)
        row = [s["name"], s.get("family", ""), _ci(s["auroc"]["overall"]),
               verdict(s["auroc"]["overall"]), *shares,
               f"{s['unranked']['clean']}/{s['unranked']['corrupted']}", f"{s['seconds']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    ok = [s for s in res["selectors"] if "error" not in s]
    lines += ["", "AUROC per kind (clean rows vs that kind's rows) [95% CI]:", ""]
    head = ["selector", *[f"{k} ({res['kind_counts'][k]})" for k in kinds]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in ok:
        lines.append("| " + " | ".join([s["name"], *[_ci(s["auroc"].get(k), 2) for k in kinds]])
                     + " |")
    lines += ["", "Selected rows by kind (count; in brackets the selection-rate ratio vs clean "
                  "rows: 1 = no preference, 0 = never taken):", ""]
    head = ["selector", "ratio", "selected", f"clean ({res['n_clean']})",
            *[f"{k} ({res['kind_counts'][k]})" for k in kinds]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in ok:
        for x in s["ratios"]:
            cells = [str(x["by_kind"][CLEAN]["selected"])]
            for k in kinds:
                b = x["by_kind"][k]
                rr = b["rate_ratio"]
                cells.append(f"{b['selected']} ({rr:.2f})" if math.isfinite(rr) else str(b["selected"]))
            lines.append("| " + " | ".join([s["name"], f"{x['ratio']:g}", str(x["n_selected"]),
                                            *cells]) + " |")
    if failed:
        lines += ["", "Failed selectors:", ""]
        lines += [f"- {s['name']}: {s['error']}" for s in failed]
    lines += ["", "Kinds: " + "; ".join(f"**{k}**: {res['kind_definitions'].get(k, '')}"
                                         for k in kinds) + ".",
              "", "AUROC uses each selector's scores at ratio 1 (its whole ranking); rows it does "
                  "not take even at ratio 1 (a filter) count as NaN; NaN ranks last, NaNs tie "
                  "('unranked' counts them). Clean share is over the rows it really selects at that ratio.",
              "", f"Wall time {res['wall_seconds']:.1f}s."]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["selector", "family", "metric", "kind", "ratio", "value", "ci95_lo", "ci95_hi",
              "n", "random_expects", "error"]


def to_csv(res: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    cf = res["clean_fraction"]
    for s in res["selectors"]:
        base = {"selector": s["name"], "family": s.get("family", "")}
        if "error" in s:
            w.writerow({**base, "metric": "error", "error": s["error"]})
            continue
        for k, e in s["auroc"].items():
            w.writerow({**base, "metric": "auroc", "kind": k, "value": e["value"],
                        "ci95_lo": e["lo"], "ci95_hi": e["hi"],
                        "n": e["n_clean"] + e["n_corrupted"], "random_expects": 0.5})
        for x in s["ratios"]:
            e = x["clean_share"]
            w.writerow({**base, "metric": "clean_share", "kind": "overall", "ratio": x["ratio"],
                        "value": e["value"], "ci95_lo": e["lo"], "ci95_hi": e["hi"],
                        "n": x["n_selected"], "random_expects": cf})
            for k, b in x["by_kind"].items():
                w.writerow({**base, "metric": "selected", "kind": k, "ratio": x["ratio"],
                            "value": b["selected"], "n": b["pool"],
                            "random_expects": x["n_selected"] * b["pool"] / res["pool"]["n"]})
                w.writerow({**base, "metric": "rate_ratio", "kind": k, "ratio": x["ratio"],
                            "value": b["rate_ratio"], "n": b["pool"], "random_expects": 1.0})
    return buf.getvalue()


def write_outputs(res: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "track.md", "csv": out_dir / "track.csv",
             "json": out_dir / "track.json"}
    atomic_write_text(paths["md"], render_markdown(res))
    atomic_write_text(paths["csv"], to_csv(res))
    atomic_write_text(paths["json"], json.dumps(res, indent=1, default=str, allow_nan=True))
    return paths
