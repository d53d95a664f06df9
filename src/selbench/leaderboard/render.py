"""Markdown in the layout of the paper's Table 1: rows = selector x regime, columns =
pool / target model / ratio, cells = pooled PWS (mean over judges when several). A second
table lists every result with W/T/L, unparsed, CI, judge and selection wall time."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .aggregate import collect


def _fmt(x, nd=3):
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.{nd}f}"


def table1(df: pd.DataFrame) -> str:
    pooled = df[df.eval_set == "pooled"]
    if pooled.empty:
        return "_no finished runs_"
    mean = pooled.groupby(["selector", "regime", "pool", "model", "ratio"], as_index=False).agg(
        pws=("pws", "mean"), judges=("judge", lambda s: ", ".join(sorted(set(s)))))
    mean["col"] = mean.apply(lambda r: f"{r.pool} / {r.model} / {r.ratio:.0%}", axis=1)
    wide = mean.pivot_table(index=["selector", "regime"], columns="col", values="pws")
    wide = wide.reset_index()
    headers = ["selector", "regime", *[c for c in wide.columns[2:]]]
    body = [[r.selector, r.regime, *[_fmt(v) for v in list(r)[2:]]] for r in wide.itertuples(index=False)]
    judges = ", ".join(sorted(set(pooled.judge)))
    note = f"\nPWS pooled over eval sets vs the full-data model (judges: {judges}; mean when several).\n"
    return tabulate(body, headers=headers, tablefmt="github") + "\n" + note


def details(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    body = []
    for r in df.itertuples(index=False):
        judge = r.judge + (" (offline, not an LLM)" if r.judge_kind == "offline" else "")
        body.append([r.selector, r.regime, r.pool, r.model, f"{r.ratio:.0%}", r.eval_set, judge,
                     f"{r.win}/{r.tie}/{r.lose}", r.unparsed, _fmt(r.pws),
                     f"[{_fmt(r.ci95_lo, 2)}, {_fmt(r.ci95_hi, 2)}]",
                     _fmt(r.position_consistency, 2), _fmt(r.selection_seconds, 1)])
    return tabulate(body, headers=["selector", "regime", "pool", "model", "ratio", "eval set",
                                   "judge", "W/T/L", "unparsed", "PWS", "95% CI",
                                   "pos. consist.", "selection s"], tablefmt="github")


def render(df: pd.DataFrame) -> str:
    return ("# selbench leaderboard\n\n" + table1(df) + "\n## All results\n\n" + details(df) + "\n")


def write_leaderboard(runs_dir: Path) -> tuple[Path, Path]:
    runs_dir = Path(runs_dir)
    df = collect(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    csv, md = runs_dir / "leaderboard.csv", runs_dir / "leaderboard.md"
    df.to_csv(csv, index=False)
    md.write_text(render(df))
    return csv, md
