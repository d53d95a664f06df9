"""Collect every finished judge result under a runs folder into one table (the CSV is the
source of truth; markdown is rendered from it).

Each row carries the fingerprints that decide what may be compared: ``setting_fp`` (pool
content, target model, train and generate config, eval prompts, full-data baseline) and
``selector_fp`` (the selector's own config). Results written before these existed get
``setting_fp = "exp:<experiment>"``, so they are never pooled across experiments.

A damaged result (its folder no longer matches its DONE manifest, or result.json cannot be
read) is skipped with a warning naming it; it never blocks the other results."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from ..runs import judge_results, verify_folder
from ..selectors import SELECTORS

COLUMNS = ["selector", "regime", "pool", "model", "ratio", "eval_set", "judge", "judge_kind",
           "win", "tie", "lose", "unparsed", "pws", "pws_compat", "ci95_lo", "ci95_hi",
           "position_consistency", "n_selected", "pool_size", "selection_seconds",
           "prompt_tokens", "completion_tokens", "cost_usd", "seed", "experiment", "model_a",
           "model_b", "setting_fp", "selector_fp", "pool_note", "setting_desc", "warnings",
           "paper_name", "family", "ablation_of", "ablation_label", "report_rank"]
META_DEFAULTS = {"paper_name": None, "family": "method", "ablation_of": None, "ablation_label": "",
                 "report_rank": 50}


def selector_meta(r: dict) -> dict:
    """What the result says about its selector (``selector_meta``, written by the run); for
    results written before that, what the registry says (a plugin that is not loaded now
    gets neutral defaults): reports never keep their own copies of selector names."""
    meta = r.get("selector_meta")
    if not isinstance(meta, dict):
        name = str(r.get("selector"))
        meta = SELECTORS.get(name).meta() if name in SELECTORS else {}
    out = {k: meta.get(k, v) for k, v in META_DEFAULTS.items()}
    out["paper_name"] = out["paper_name"] or r.get("selector")
    return out


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _load_result(res: Path, warn=_warn) -> dict | None:
    """The parsed result.json of a finished judge folder, or None (with a warning) if damaged."""
    damaged = verify_folder(res.parent)
    if damaged:
        warn(f"skipping damaged result {res.parent}: {'; '.join(damaged)} (rerun the same "
             f"`bench run` to rebuild it)")
        return None
    try:
        r = json.loads(res.read_text(encoding="utf-8"))
        if not isinstance(r, dict):
            raise ValueError(f"expected a JSON object, got a {type(r).__name__}")
        if not isinstance(r.get("summary"), dict):
            raise ValueError("no 'summary'")
        for s in r["summary"].values():
            for k in ("win", "tie", "lose", "unparsed", "pws", "ci95", "position_consistency"):
                s[k]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        warn(f"skipping damaged result {res}: {type(e).__name__}: {str(e)[:120]} (delete its "
             f"folder and rerun the same `bench run` to rebuild it)")
        return None
    return r


def collect(runs_dir: Path, warn=_warn) -> pd.DataFrame:
    rows = []
    for res in judge_results(runs_dir):
        r = _load_result(res, warn)
        if r is None:
            continue
        stats = r.get("usage", {})
        for es, s in r["summary"].items():
            rows.append({
                **{k: r.get(k) for k in ("selector", "regime", "pool", "model", "ratio", "judge",
                                         "judge_kind", "n_selected", "pool_size",
                                         "selection_seconds", "seed", "experiment", "model_a",
                                         "model_b", "pool_note", "setting_desc")},
                "setting_fp": r.get("setting_fp") or f"exp:{r.get('experiment')}",
                "selector_fp": r.get("selector_fp") or "?",
                "pws_compat": s.get("pws_compat"),
                "eval_set": es, "win": s["win"], "tie": s["tie"], "lose": s["lose"],
                "unparsed": s["unparsed"], "pws": s["pws"],
                "ci95_lo": s["ci95"][0], "ci95_hi": s["ci95"][1],
                "position_consistency": s["position_consistency"],
                "prompt_tokens": stats.get("prompt_tokens", 0) if es == "pooled" else None,
                "completion_tokens": stats.get("completion_tokens", 0) if es == "pooled" else None,
                "cost_usd": r.get("cost_usd") if es == "pooled" else None,
                "warnings": "; ".join(r.get("warnings") or []) or None,
                **selector_meta(r),
            })
    df = pd.DataFrame(rows, columns=COLUMNS)
    if len(df):
        df = df.sort_values(["pool", "model", "regime", "selector", "ratio", "judge", "eval_set"],
                            kind="stable").reset_index(drop=True)
    return df
