"""Collect every finished judge result under a runs folder into one table (the CSV is the
source of truth; markdown is rendered from it).

Each row carries the fingerprints that decide what may be compared: ``setting_fp`` (pool
content, target model, train and generate config, eval prompts, full-data baseline) and
``selector_fp`` (the selector's own config). Results written before these existed get
``setting_fp = "exp:<experiment>"``, so they are never pooled across experiments."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = ["selector", "regime", "pool", "model", "ratio", "eval_set", "judge", "judge_kind",
           "win", "tie", "lose", "unparsed", "pws", "pws_compat", "ci95_lo", "ci95_hi",
           "position_consistency", "n_selected", "pool_size", "selection_seconds",
           "prompt_tokens", "completion_tokens", "cost_usd", "seed", "experiment", "model_a",
           "model_b", "setting_fp", "selector_fp", "pool_note", "setting_desc"]


def collect(runs_dir: Path) -> pd.DataFrame:
    rows = []
    for res in sorted(Path(runs_dir).glob("*/judge/*/*/result.json")):
        if not (res.parent / "DONE").exists():
            continue
        r = json.loads(res.read_text())
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
            })
    df = pd.DataFrame(rows, columns=COLUMNS)
    if len(df):
        df = df.sort_values(["pool", "model", "regime", "selector", "ratio", "judge", "eval_set"],
                            kind="stable").reset_index(drop=True)
    return df
