"""The study's data: the one reader of finished results, and the small files a published
study ships so that it can be re-rendered without the runs folder.

:meth:`StudyData.from_runs` reads a runs folder once (result.json and judgments.jsonl of
every judge stage, answers, reference-NLL per prompt, subsets, scores, loss curves, the
selection cost records, grid status, manifests). Every table, section and figure is drawn
from a :class:`StudyData`, never from the runs folder, and :meth:`StudyData.save` /
:meth:`StudyData.load` round-trip it through ``<study>/data/`` (CSV and JSON files).

A damaged or unreadable file (a stage folder that no longer matches its DONE manifest, a
truncated CSV, a list-shaped result.json, a bad scores.npy) is skipped and named in
``meta["skipped"]``; it never aborts a leaderboard or a publish.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..corrupt import CLEAN, CorruptionRecord, apply_corruption
from ..data import load_pool, resolve_data_dir
from ..judges.prompts import PROMPT_VERSION
from ..runs import (DONE, SELECT, TRAIN, RunDir, package_versions, train_key_of,
                    verify_folder)
from ..selectors.published import ALPACA_FILE, ENTRIES, INDEX_FILE, published_ids
from .controlled import add_controlled, has_controlled
from .lengthctl import answer_features
from .stats import words
from .study import answers_of, collect_study

DEFAULT_PUBLISHED = ["cherry-ifd-5pct", "alpagasus-claude-t45", "long-is-more-1k-longest",
                     "dq-k5-5k", "superfiltering-fork-10pct"]
FILES = {"results": "results.csv", "prompts": "prompts.csv", "refnll": "refnll.csv",
         "subsets": "subsets.jsonl", "lengths": "lengths.csv", "score_hist": "score_hist.csv",
         "losses": "losses.csv", "shared": "shared.csv", "judge_style": "judge_style.csv"}
@dataclass
class StudyData:
    results: pd.DataFrame
    prompts: pd.DataFrame = field(default_factory=pd.DataFrame)
    refnll: pd.DataFrame = field(default_factory=pd.DataFrame)
    subsets: pd.DataFrame = field(default_factory=pd.DataFrame)
    lengths: pd.DataFrame = field(default_factory=pd.DataFrame)
    score_hist: pd.DataFrame = field(default_factory=pd.DataFrame)
    losses: pd.DataFrame = field(default_factory=pd.DataFrame)
    shared: pd.DataFrame = field(default_factory=pd.DataFrame)
    judge_style: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per judge: its fitted length / style preferences (:func:`.controlled.add_controlled`)."""
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, fn in FILES.items():
            frame = getattr(self, name)
            if fn.endswith(".jsonl"):
                with (folder / fn).open("w", encoding="utf-8") as f:
                    for r in frame.to_dict("records"):
                        f.write(json.dumps(r, default=str) + "\n")
            else:
                frame.to_csv(folder / fn, index=False)
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))

    @classmethod
    def load(cls, folder: Path) -> "StudyData":
        folder = Path(folder)
        if not (folder / "results.csv").exists():
            raise FileNotFoundError(f"{folder}: no results.csv (not the data/ folder of a "
                                    f"published study)")
        frames = {}
        for name, fn in FILES.items():
            p = folder / fn
            if not p.exists() or p.stat().st_size == 0:
                frames[name] = pd.DataFrame()
            elif fn.endswith(".jsonl"):
                frames[name] = pd.DataFrame([json.loads(x) for x in p.read_text().splitlines() if x.strip()])
            else:
                try:
                    frames[name] = pd.read_csv(p)
                except pd.errors.EmptyDataError:
                    frames[name] = pd.DataFrame()
        meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
        data = cls(meta=meta, **frames)
        if not has_controlled(data.results) and not data.prompts.empty:
            # a study saved before the controlled columns existed: fitted from its prompts.csv
            data.results, data.judge_style = add_controlled(data.results, data.prompts)
        return data

    # ------------------------------------------------------------------ from runs
    @classmethod
    def from_runs(cls, runs_dir: Path, data_dir: str | None = None,
                  published: list[str] | None = None) -> "StudyData":
        runs_dir = Path(runs_dir).resolve()
        skipped: list[str] = []
        results = collect_study(runs_dir, warn=lambda m: skipped.append(m))
        # a local model folder is shown by its name (no machine paths in a published study)
        results["model"] = [Path(m).name if isinstance(m, str) and m.startswith(("/", "~", "./"))
                            else m for m in results.model]
        data = cls(results=results, meta={"skipped": skipped})
        if results.empty:
            return data
        pooled = results[results.eval_set == "pooled"]
        data.prompts = prompt_rows(runs_dir, pooled, skipped)
        data.results, data.judge_style = add_controlled(results, data.prompts)
        data.refnll = _refnll(runs_dir, pooled, skipped)
        data.subsets, data.shared, pools = _subsets(runs_dir, pooled, skipped)
        data.score_hist = _score_hist(runs_dir, pooled, skipped)
        data.losses = _losses(runs_dir, pooled, skipped)
        data.lengths = _lengths(data.subsets, pools, data_dir, skipped,
                                DEFAULT_PUBLISHED if published is None else published)
        exps = sorted(set(pooled.experiment.dropna()))
        data.meta.update({"commands": _commands(runs_dir, exps), "versions": _versions(runs_dir, exps),
                          "grids": _grids(runs_dir, exps), "prompt_version": PROMPT_VERSION,
                          "experiments": exps})
        return data


# --------------------------------------------------------------------------- readers
def _json(p: Path, skipped: list[str], what: str) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        skipped.append(f"{what} {p}: {type(e).__name__}: {str(e)[:100]}")
        return None


def _jsonl(p: Path, skipped: list[str], what: str) -> list[dict]:
    try:
        rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
        return [r for r in rows if isinstance(r, dict)]
    except (OSError, ValueError, RecursionError) as e:
        skipped.append(f"{what} {p}: {type(e).__name__}: {str(e)[:100]}")
        return []


def _intact(folder: Path, skipped: list[str], what: str) -> bool:
    if not (folder / DONE).exists():
        return False
    damaged = verify_folder(folder)
    if damaged:
        skipped.append(f"{what} {folder}: damaged ({'; '.join(damaged)})")
        return False
    return True


def prompt_rows(runs_dir: Path, pooled: pd.DataFrame, skipped: list[str]) -> pd.DataFrame:
    """One row per judged prompt of every result in ``pooled``: its outcome and the style
    covariates of both answers (the input of length / style control)."""
    rows = []
    answers: dict = {}
    for r in pooled.drop_duplicates(subset=["result_dir"]).itertuples():
        if not isinstance(r.result_dir, str):
            continue
        root = runs_dir / str(r.experiment)
        for gen in (r.model_a, r.model_b):
            if (root, gen) not in answers:
                answers[(root, gen)] = answers_of(root, gen)
        a, b = answers[(root, r.model_a)], answers[(root, r.model_b)]
        for j in _jsonl(runs_dir / r.result_dir / "judgments.jsonl", skipped, "judgments"):
            es, pid = j.get("eval_set"), str(j.get("id"))
            # the covariates of length / style control (lengthctl.answer_features):
            # len (words), header, list, bold of each answer
            fa = answer_features(a.get(es, {}).get(pid, ""))
            fb = answer_features(b.get(es, {}).get(pid, ""))
            rows.append({"result_dir": r.result_dir, "judge": r.judge, "judge_kind": r.judge_kind,
                         "experiment": r.experiment, "setting_fp": r.setting_fp,
                         "selector": r.selector, "selector_fp": r.selector_fp, "regime": r.regime,
                         "ratio": r.ratio, "seed": r.seed, "model_a": r.model_a, "model_b": r.model_b,
                         "eval_set": es, "id": pid, "outcome": j.get("outcome"),
                         "scores_ab": json.dumps(j.get("scores_ab")),
                         "scores_ba": json.dumps(j.get("scores_ba")),
                         **{f"{k}_a": v for k, v in fa.items()}, **{f"{k}_b": v for k, v in fb.items()}})
    return pd.DataFrame(rows)


def _refnll(runs_dir: Path, pooled: pd.DataFrame, skipped: list[str]) -> pd.DataFrame:
    rows, seen = [], set()
    for r in pooled.itertuples():
        root = RunDir(runs_dir / str(r.experiment))
        for role, gen in (("subset", r.model_a), ("full", r.model_b)):
            tkey = train_key_of(gen)
            if (r.experiment, tkey) in seen:
                continue
            seen.add((r.experiment, tkey))
            hits = root.find("refnll", tkey)
            if not hits or not _intact(hits[-1], skipped, "reference NLL"):
                continue
            for x in _jsonl(hits[-1] / "per_prompt.jsonl", skipped, "reference NLL"):
                rows.append({"experiment": r.experiment, "train_key": tkey, "eval_set": x.get("eval_set"),
                             "id": str(x.get("id")), "nll_sum": x.get("nll_sum"), "tokens": x.get("tokens")})
    return pd.DataFrame(rows)


def _subsets(runs_dir: Path, pooled: pd.DataFrame, skipped: list[str]):
    rows, shared, pools = [], {}, {}
    for r in pooled.drop_duplicates(subset=["experiment", "model_a"]).itertuples():
        res = _json(runs_dir / str(r.result_dir) / "result.json", skipped, "result") \
            if isinstance(r.result_dir, str) else None
        sk = (res or {}).get("select_key") if isinstance(res, dict) else None
        if not sk:
            continue
        folder = RunDir(runs_dir / str(r.experiment)).stage_dir(SELECT, sk)
        if not _intact(folder, skipped, "selection"):
            continue
        sub = _json(folder / "subset.json", skipped, "subset")
        info = _json(folder / "info.json", skipped, "selection info") or {}
        if not isinstance(sub, dict) or not isinstance(sub.get("ids"), list):
            skipped.append(f"subset {folder / 'subset.json'}: no list of ids")
            continue
        cost = info.get("cost") or {}
        rows.append({"experiment": r.experiment, "select_key": sk, "selector": r.selector,
                     "selector_fp": r.selector_fp, "setting_fp": r.setting_fp, "seed": r.seed,
                     "ratio": r.ratio, "regime": r.regime, "n": len(sub["ids"]),
                     "ids": sub["ids"], "own_seconds": cost.get("own_seconds"),
                     "selection_seconds": info.get("selection_seconds"),
                     "device": cost.get("device") or info.get("device"),
                     "shared_keys": [w["key"] for w in cost.get("shared", [])],
                     "pool": info.get("pool")})
        for w in cost.get("shared", []):
            k = (r.experiment, w["key"])
            e = shared.setdefault(k, {"experiment": r.experiment, "key": w["key"], "what": w.get("what"),
                                      "seconds": w.get("seconds"), "flops": w.get("flops"), "used_by": []})
            e["used_by"].append(sk)
        if isinstance(info.get("pool"), dict):
            pools[(r.experiment, sk)] = info["pool"]
    sh = pd.DataFrame([{**v, "used_by": json.dumps(sorted(set(v["used_by"])))} for v in shared.values()])
    return pd.DataFrame(rows), sh, pools


def _score_hist(runs_dir: Path, pooled: pd.DataFrame, skipped: list[str], bins: int = 30) -> pd.DataFrame:
    """Per selection: a histogram of its scores over the pool and over the selected rows, on a
    linear axis, or on a symlog axis (sign(s) log10(1 + |s|)) when the scores span more than
    three orders of magnitude."""
    out, seen = [], set()
    for r in pooled.drop_duplicates(subset=["experiment", "model_a"]).sort_values("seed").itertuples():
        if r.selector in seen or not isinstance(r.result_dir, str):
            continue
        res = _json(runs_dir / r.result_dir / "result.json", skipped, "result")
        sk = res.get("select_key") if isinstance(res, dict) else None
        folder = RunDir(runs_dir / str(r.experiment)).stage_dir(SELECT, sk) if sk else None
        if folder is None or not (folder / "scores.npy").exists() or not _intact(folder, skipped, "selection"):
            continue
        try:
            scores = np.asarray(np.load(folder / "scores.npy", allow_pickle=False), dtype=float).ravel()
            chosen = json.loads((folder / "subset.json").read_text())["indices"]
        except (OSError, ValueError, KeyError) as e:
            skipped.append(f"scores {folder / 'scores.npy'}: {type(e).__name__}: {str(e)[:80]}")
            continue
        finite = np.isfinite(scores)
        if finite.sum() < 2 or np.ptp(scores[finite]) == 0:
            continue  # constant scores (random, published): nothing to draw
        seen.add(r.selector)
        v = scores[finite]
        med = np.median(np.abs(v))
        symlog = bool(med > 0 and np.abs(v).max() / med > 1e3)
        x = np.sign(scores) * np.log10(1 + np.abs(scores)) if symlog else scores
        edges = np.histogram_bin_edges(x[finite], bins=bins)
        sel = np.zeros(len(scores), bool)
        sel[[i for i in chosen if 0 <= i < len(scores)]] = True
        pool_c, _ = np.histogram(x[finite], bins=edges)
        sel_c, _ = np.histogram(x[finite & sel], bins=edges)
        for i in range(bins):
            out.append({"selector": r.selector, "experiment": r.experiment, "select_key": sk,
                        "ratio": r.ratio, "bin_lo": edges[i], "bin_hi": edges[i + 1],
                        "pool": int(pool_c[i]), "selected": int(sel_c[i]),
                        "scale": "symlog" if symlog else "linear",
                        "nan_scores": int((~finite).sum())})
    return pd.DataFrame(out)


def _losses(runs_dir: Path, pooled: pd.DataFrame, skipped: list[str]) -> pd.DataFrame:
    rows, seen = [], set()
    for r in pooled.itertuples():
        for role, gen in (("subset", r.model_a), ("full", r.model_b)):
            tkey = train_key_of(gen)
            if (r.experiment, tkey) in seen:
                continue
            seen.add((r.experiment, tkey))
            folder = RunDir(runs_dir / str(r.experiment)).stage_dir(TRAIN, tkey)
            if not _intact(folder, skipped, "train stage"):
                continue
            try:
                d = pd.read_csv(folder / "loss.csv")
                steps, losses = d["step"].astype(float), d["loss"].astype(float)
            except (OSError, ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
                skipped.append(f"loss curve {folder / 'loss.csv'}: {type(e).__name__}: {str(e)[:80]}")
                continue
            info = _json(folder / "train.json", skipped, "train info") or {}
            for s, l in zip(steps, losses):
                rows.append({"experiment": r.experiment, "train_key": tkey, "role": role,
                             "step": s, "loss": l, "examples": info.get("examples")})
    return pd.DataFrame(rows)


def _lengths(subsets: pd.DataFrame, pools: dict, data_dir: str | None, skipped: list[str],
             published: list[str]) -> pd.DataFrame:
    """Response length (words) of the selected rows of every selection, of its pool, and of
    published Alpaca subsets intersected with the pool: quartiles, mean and n per group."""
    rows = []
    loaded: dict = {}
    for s in subsets.to_dict("records"):
        rec = pools.get((s["experiment"], s["select_key"]))
        if not isinstance(rec, dict):
            continue
        d = rec.get("data") or {}
        key = json.dumps(d, sort_keys=True)
        if key not in loaded:
            try:
                pool = load_pool(d["pool"], d.get("data_dir") or data_dir, d.get("pool_size"),
                                 d.get("sample_seed", 0), d.get("columns") or {})
                if d.get("corrupt"):  # the run's planted corruption, rebuilt from its seed
                    pool = apply_corruption(pool, d["corrupt"])
                loaded[key] = pool if pool.fingerprint() == rec.get("fingerprint") else None
                if loaded[key] is None:
                    skipped.append(f"pool of {s['select_key']}: its rows changed since the run "
                                   f"(fingerprint differs); lengths left out")
            except Exception as e:  # noqa: BLE001 - the data is not here: lengths left out
                skipped.append(f"pool of {s['select_key']}: {type(e).__name__}: {str(e)[:80]}")
                loaded[key] = None
        pool = loaded[key]
        if pool is None:
            continue
        lens = {r["id"]: words(r["output"]) for r in pool.rows}
        kinds = _kinds(pool)
        if not any(x["group"] == "pool" and x["pool_fp"] == rec.get("fingerprint") for x in rows):
            rows.append({**_box("pool", list(lens.values()), rec.get("fingerprint"), None),
                         **_corrupted(kinds, list(lens))})
            if pool.name == "alpaca":
                rows += _published_lengths(pool, lens, data_dir, published, rec.get("fingerprint"))
        rows.append({**_box(s["select_key"], [lens[i] for i in s["ids"] if i in lens],
                            rec.get("fingerprint"), s), **_corrupted(kinds, s["ids"])})
    return pd.DataFrame(rows)


def _kinds(pool) -> dict[str, str] | None:
    """Row id -> corruption kind ("clean" for untouched rows) of a pool with planted
    corruption; None for a pool without."""
    if not getattr(pool, "corruption", None):
        return None
    rec = CorruptionRecord(pool.corruption)
    return dict(zip((r["id"] for r in pool.rows), rec.kinds_of(pool)))


def _corrupted(kinds: dict[str, str] | None, ids: list[str]) -> dict:
    """How many of ``ids`` are planted-corrupted rows, in all and per kind (JSON)."""
    if kinds is None:
        return {}
    per: dict[str, int] = {}
    for i in ids:
        k = kinds.get(i)
        if k and k != CLEAN:
            per[k] = per.get(k, 0) + 1
    return {"corrupted": sum(per.values()), "corrupted_kinds": json.dumps(dict(sorted(per.items())))}


def _box(group: str, v: list[int], fp: str | None, s: dict | None) -> dict:
    a = np.asarray(v, float) if v else np.zeros(0)
    q = np.quantile(a, [0, 0.25, 0.5, 0.75, 1.0]) if len(a) else [np.nan] * 5
    out = {"group": group, "pool_fp": fp, "n": len(a), "mean": float(a.mean()) if len(a) else np.nan,
           "min": q[0], "q1": q[1], "median": q[2], "q3": q[3], "max": q[4],
           "p10": float(np.quantile(a, 0.1)) if len(a) else np.nan,
           "p90": float(np.quantile(a, 0.9)) if len(a) else np.nan}
    if s is not None:
        out.update({"selector": s["selector"], "seed": s["seed"], "ratio": s["ratio"],
                    "experiment": s["experiment"], "setting_fp": s["setting_fp"]})
    return out


def _published_lengths(pool, lens: dict, data_dir: str | None, published: list[str], fp) -> list[dict]:
    dd = resolve_data_dir(data_dir)
    if dd is None or not (dd / INDEX_FILE).exists():
        return []
    out = []
    for short in published:
        ids, _ = published_ids(ENTRIES[short], dd / INDEX_FILE, dd / ALPACA_FILE)
        inter = [i for i in ids if i in lens]
        row = _box(f"published:{short}", [lens[i] for i in inter], fp, None)
        row.update({"ids": json.dumps(inter), "published_size": len(ids)})
        out.append(row)
    return out


def _commands(runs_dir: Path, experiments: list[str]) -> list[str]:
    cmds = []
    for exp in experiments:
        man = _json(runs_dir / exp / "manifest.json", [], "manifest")
        for e in (man or {}).get("invocations", []) if isinstance(man, dict) else []:
            c = " ".join(x for x in e.get("command", []) if not str(x).startswith("# cell"))
            if c and c not in cmds:
                cmds.append(c)
    return cmds


def _versions(runs_dir: Path, experiments: list[str]) -> dict:
    out = {}
    for exp in experiments:
        man = _json(runs_dir / exp / "manifest.json", [], "manifest")
        inv = (man or {}).get("invocations", []) if isinstance(man, dict) else []
        if inv:
            out.update(inv[-1].get("versions", {}))
    return out or package_versions()


def _grids(runs_dir: Path, experiments: list[str]) -> list[dict]:
    """Each grid's recorded status: cells by state; cells it planned but has not reached
    count as pending (the grid records its planned cells when it starts)."""
    out = []
    for exp in experiments:
        for f in sorted((runs_dir / exp / "grid").glob("*.json")):
            st = _json(f, [], "grid status")
            if not isinstance(st, dict):
                continue
            cells = dict(st.get("cells", {}))
            for name in st.get("planned", []):
                cells.setdefault(name, {"state": "pending", "error": "not run yet"})
            out.append({"grid": f.stem, "experiment": exp, "finished": bool(st.get("finished")),
                        "cells": {k: {"state": v.get("state"), "error": v.get("error", "")}
                                  for k, v in cells.items()}})
    return out
