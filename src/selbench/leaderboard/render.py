"""Markdown in the layout of the paper's Table 1: rows = selector x regime, columns =
pool / target model / ratio, cells = pooled PWS.

A cell is ONE comparison: the same pool, target model, regime, ratio, train and generate
config, eval prompts, full-data baseline (``setting_fp``) and selector config
(``selector_fp``). Results that differ in any of these are never averaged: they get their
own column (tagged with the setting) or row (tagged with the selector config). Within a
cell, a seed's value is the mean over the LLM judges of that comparison; several seeds give
mean +- sample standard deviation with n. Offline (non-LLM) judges never enter that mean:
they get their own table. A second section lists every result with W/T/L, unparsed, both
PWS variants, CI, judge and selection wall time."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .aggregate import collect
from .study import collect_study

CELL_KEYS = ["selector", "selector_fp", "regime", "pool", "model", "ratio", "setting_fp"]


def _fmt(x, nd=3):
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.{nd}f}"


def _tag(fp: str) -> str:
    return fp.split(":", 1)[1] if fp.startswith("exp:") else fp[:6]


def cells(pooled: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean over judges per seed, then mean/std/n over seeds."""
    per_seed = pooled.groupby(CELL_KEYS + ["seed"], as_index=False, dropna=False).agg(
        pws=("pws", "mean"), judges=("judge", lambda s: ", ".join(sorted(set(s)))))
    desc = pooled.groupby("setting_fp")["setting_desc"].first()
    out = per_seed.groupby(CELL_KEYS, as_index=False, dropna=False).agg(
        pws_mean=("pws", "mean"), pws_sd=("pws", "std"), n_seeds=("pws", "size"),
        seeds=("seed", lambda s: ",".join(str(x) for x in sorted(s))), judges=("judges", "first"))
    out["setting_desc"] = out.setting_fp.map(desc)
    return out


def _cell_text(r) -> str:
    if r["n_seeds"] <= 1:
        return _fmt(r["pws_mean"])
    return f"{_fmt(r['pws_mean'])} ± {_fmt(r['pws_sd'])} (n={r['n_seeds']})"


def pivot(c: pd.DataFrame, full_column: bool = False, text_fn=None,
          row_order: list[str] | None = None) -> tuple[str, list[str]]:
    """Markdown table of cells; returns (table, legend lines for setting tags).

    ``full_column``: after each pool / model column group, a "100%" column holding 1.00
    (the full-data model judged against itself, by definition of PWS), as in the paper.
    ``text_fn(row)``: the cell text (default: PWS mean, ± sd (n) over seeds).
    ``row_order``: selectors listed first, in this order (the rest sorted after them)."""
    c = c.copy()
    n_set = c.groupby(["pool", "model", "ratio", "regime"])["setting_fp"].transform("nunique")
    tagged_cols = set(c.loc[n_set > 1, "pool"] + "|" + c.loc[n_set > 1, "model"]
                      + "|" + c.loc[n_set > 1, "ratio"].astype(str))
    n_sel = c.groupby("selector")["selector_fp"].transform("nunique")

    def col(r):
        label = f"{r.pool} / {r.model} / {r.ratio:.0%}"
        if f"{r.pool}|{r.model}|{r.ratio}" in tagged_cols:
            label += f" [{_tag(r.setting_fp)}]"
        return label

    c["col"] = c.apply(col, axis=1)
    c["row"] = [f"{s} [{_tag(fp)}]" if k > 1 else s
                for s, fp, k in zip(c.selector, c.selector_fp, n_sel)]
    c["text"] = c.apply(text_fn or _cell_text, axis=1)
    cols = list(dict.fromkeys(c.sort_values(["pool", "model", "ratio"]).col))
    order = {name: i for i, name in enumerate(row_order or [])}
    c["_rank"] = [order.get(sel, len(order)) for sel in c.selector]
    srt = c.sort_values(["_rank", "selector", "regime"], kind="stable")
    rows = list(dict.fromkeys(zip(srt.row, srt.regime)))
    groups: dict[str, str] = {}
    if full_column:
        for k in cols:
            g = k.rsplit(" / ", 1)[0] + " / 100%"
            groups[k] = g
        new_cols = []
        for i, k in enumerate(cols):
            new_cols.append(k)
            if i + 1 == len(cols) or groups[cols[i + 1]] != groups[k]:
                new_cols.append(groups[k])
        cols_out = new_cols
    else:
        cols_out = cols
    body = []
    for row, regime in rows:
        sub = c[(c.row == row) & (c.regime == regime)]
        vals = dict(zip(sub.col, sub.text))
        if full_column:
            for k, g in groups.items():
                if vals.get(k):
                    vals[g] = "1.00"
        body.append([row, regime, *[vals.get(k, "") for k in cols_out]])
    cols = cols_out
    legend = []
    if tagged_cols:
        desc = dict(zip(c.setting_fp, c.setting_desc))
        for fp in sorted(set(c.setting_fp)):
            legend.append(f"- setting [{_tag(fp)}]: {desc.get(fp) or fp}")
    return tabulate(body, headers=["selector", "regime", *cols], tablefmt="github",
                    disable_numparse=True), legend


def table1(df: pd.DataFrame) -> str:
    pooled = df[df.eval_set == "pooled"]
    llm = pooled[pooled.judge_kind != "offline"]
    if llm.empty:
        return "_no finished runs judged by an LLM_\n"
    table, legend = pivot(cells(llm), full_column=True)
    judges = ", ".join(sorted(set(llm.judge)))
    note = (f"\nPWS pooled over eval sets vs the full-data model of the same setting "
            f"(LLM judges: {judges}; a cell's value is the mean over them, per seed; several "
            f"seeds: mean ± sd (n)). Unparsed prompts are left out (see PWS-compat below).\n")
    return table + "\n" + note + ("\n".join(legend) + "\n" if legend else "") + _notes(llm)


def table_offline(df: pd.DataFrame) -> str:
    pooled = df[(df.eval_set == "pooled") & (df.judge_kind == "offline")]
    if pooled.empty:
        return ""
    out = []
    for judge, sub in pooled.groupby("judge"):
        table, legend = pivot(cells(sub), full_column=True)
        out.append(f"### {judge} (offline, not an LLM)\n\n{table}\n"
                   + ("\n".join(legend) + "\n" if legend else ""))
    return ("## Judge-free and non-LLM metrics (never mixed into Table 1)\n\n"
            + "\n".join(out) + _notes(pooled))


# --------------------------------------------------------------------------- study tables
GSNR_ABLATIONS = ["gsnr-drop", "gsnr-reldrop", "gsnr-drop-var"]
ABLATION_DESC = {"gsnr": "G-SNR (eq. 5)", "gsnr-drop": "#1 G_s - G_t",
                 "gsnr-reldrop": "#2 (G_s - G_t)/(G_s + eps)",
                 "gsnr-drop-var": "#3 (G_s - G_t)/(V_t + eps)"}


def judge_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per judge group: the LLM judges together (a cell's value is their
    mean), then each offline judge on its own, never mixed."""
    out = []
    llm = df[df.judge_kind != "offline"]
    if not llm.empty:
        out.append((f"LLM judges: {', '.join(sorted(set(llm.judge)))}", llm))
    for judge, sub in df[df.judge_kind == "offline"].groupby("judge"):
        out.append((f"{judge} (offline, not an LLM)", sub))
    return out


def table1_paper(df: pd.DataFrame, eval_set: str = "pooled",
                 row_order: list[str] | None = None) -> str:
    """Table 1 layout for every judge group: rows = selector x regime, column groups =
    pool / target model / ratio with the 100% column = 1.00, cells = PWS (mean over the
    group's judges per seed; several seeds: mean ± sd (n))."""
    sub = df[df.eval_set == eval_set]
    if sub.empty:
        return f"_no results for eval set {eval_set}_\n"
    out = []
    for title, g in judge_groups(sub):
        table, legend = pivot(cells(g), full_column=True, row_order=row_order)
        out.append(f"**{title}**\n\n{table}\n" + ("\n".join(legend) + "\n" if legend else ""))
    return "\n".join(out)


def table2_paper(df: pd.DataFrame, eval_set: str = "pooled") -> str:
    """Table 2 layout: the G-SNR ablations as PWS deltas against ``gsnr`` in the same cell
    (same setting, ratio, regime and seed set); the ``gsnr`` row itself is absolute."""
    sub = df[(df.eval_set == eval_set) & df.selector.isin(["gsnr", *GSNR_ABLATIONS])]
    if sub.empty or not sub.selector.isin(GSNR_ABLATIONS).any():
        return "_no G-SNR ablation was run (selectors gsnr-drop, gsnr-reldrop, gsnr-drop-var)_\n"
    out = []
    for title, g in judge_groups(sub):
        c = cells(g)
        keys = ["regime", "pool", "model", "ratio", "setting_fp"]
        base = c[c.selector == "gsnr"].set_index(keys)["pws_mean"]
        base = base[~base.index.duplicated()]

        def text(r, base=base):
            if r["selector"] == "gsnr":
                return _fmt(r["pws_mean"])
            k = tuple(r[x] for x in keys)
            if k not in base.index:
                return f"{_fmt(r['pws_mean'])} (no gsnr)"
            d = r["pws_mean"] - base[k]
            return f"{d:+.3f}"

        c = c.copy()
        c["selector"] = c.selector.map(lambda x: f"{x}: {ABLATION_DESC.get(x, x)}")
        order = [f"{x}: {ABLATION_DESC[x]}" for x in ["gsnr", *GSNR_ABLATIONS]]
        c["_sel"] = c.selector
        table, legend = pivot(c, text_fn=lambda r: text({**r, "selector": r["_sel"].split(":")[0]}),
                              row_order=order)
        out.append(f"**{title}**\n\n{table}\n" + ("\n".join(legend) + "\n" if legend else ""))
    return "\n".join(out)


def _notes(df: pd.DataFrame) -> str:
    notes = sorted({n for n in df.get("pool_note", pd.Series(dtype=object)).dropna() if n})
    return "".join(f"\n**Pool note:** {n}\n" for n in notes)


def details(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    body = []
    for r in df.itertuples(index=False):
        judge = r.judge + (" (offline, not an LLM)" if r.judge_kind == "offline" else "")
        body.append([r.selector, r.regime, r.pool, r.model, f"{r.ratio:.0%}", r.seed, r.eval_set,
                     judge, f"{r.win}/{r.tie}/{r.lose}", r.unparsed, _fmt(r.pws),
                     _fmt(r.pws_compat), f"[{_fmt(r.ci95_lo, 2)}, {_fmt(r.ci95_hi, 2)}]",
                     _fmt(r.position_consistency, 2), _fmt(r.selection_seconds, 1),
                     _tag(str(r.setting_fp))])
    return tabulate(body, headers=["selector", "regime", "pool", "model", "ratio", "seed",
                                   "eval set", "judge", "W/T/L", "unparsed", "PWS",
                                   "PWS-compat", "95% CI", "pos. consist.", "selection s",
                                   "setting"], tablefmt="github", disable_numparse=True)


def warnings_section(df: pd.DataFrame) -> str:
    """Results whose models carry training warnings (e.g. <= 1 effective update, weights
    unchanged): one line per result, so a suspicious number is flagged next to the tables."""
    if df.empty or "warnings" not in df:
        return ""
    rows = df[df.eval_set == "pooled"] if "eval_set" in df else df
    lines = []
    for r in rows.itertuples(index=False):
        w = getattr(r, "warnings", None)
        if isinstance(w, str) and w:
            lines.append(f"- **{r.selector}** {r.regime} {r.pool} / {r.model} / {r.ratio:.0%}, "
                         f"seed {r.seed}, judge {r.judge}: {w}")
    if not lines:
        return ""
    return "\n## Warnings\n\n" + "\n".join(sorted(set(lines))) + "\n"


LEGEND = ("PWS = 1 + (W - L) / (W + T + L). **PWS** leaves prompts with an unparsed judge "
          "completion out (counted in `unparsed`); **PWS-compat** is the Cherry/Superfiltering "
          "rule, where an unparsed order counts as a tie.\n")


def render(df: pd.DataFrame) -> str:
    return ("# selbench leaderboard\n\n" + table1(df) + "\n" + table_offline(df)
            + warnings_section(df)
            + "\n## All results\n\n" + LEGEND + "\n" + details(df) + "\n")


def write_leaderboard(runs_dir: Path) -> tuple[Path, Path]:
    runs_dir = Path(runs_dir)
    try:  # the study columns (reference NLL, lengths, costs) join the CSV

        df = collect_study(runs_dir)
    except Exception as e:  # noqa: BLE001 - never lose the leaderboard over an extra column
        print(f"[warn]   study columns left out of the leaderboard: {type(e).__name__}: {e}")
        df = collect(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    csv, md = runs_dir / "leaderboard.csv", runs_dir / "leaderboard.md"
    df.to_csv(csv, index=False)
    md.write_text(render(df))
    return csv, md
