"""Markdown tables in the layout of the paper's Table 1 and Table 2.

Columns: one group per pool / target model (pools in a fixed order, models by size, not by
name), each with its ratios and the 100% column (the full-data model judged against itself:
1.00 by definition). Rows: one block per training regime (LoRA, then full fine-tuning), in
each block the selectors in their report order (baselines first), under the names their
papers use; a note under the table maps the names to selector ids.

A cell is ONE comparison: the same pool, target model, regime, ratio, training and generate
settings, eval prompts, full-data baseline (``setting_fp``) and selector config
(``selector_fp``). Results that differ in any of these are never averaged: they get their
own column (tagged with the setting) or row (tagged with the selector config). Within a
cell, a seed's value is the mean over the judges the table names (the LLM judges of that
table; offline judges get their own table); several seeds: mean +- sample sd (n). A cell
where a seed lacks one of those judges is **marked, never silently averaged**: with some
seeds complete it shows the mean over the complete seeds (marked ‡), with none it shows the
judges it has (marked †); Table 2 computes no delta from a marked cell. Selector names,
ablations and row order come from the results themselves (``selector_meta``).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from ..estimates import model_params
from .aggregate import collect
from .controlled import add_controlled
from .data import prompt_rows
from .study import collect_study

CELL_KEYS = ["selector", "selector_fp", "regime", "pool", "model", "ratio", "setting_fp"]
POOL_ORDER = {"alpaca": 0, "alpaca-gpt4": 1, "alpaca-gpt4-partial": 2}
POOL_NAMES = {"alpaca": "Alpaca", "alpaca-gpt4": "Alpaca-GPT4",
              "alpaca-gpt4-partial": "Alpaca-GPT4 (partial)"}
REGIME_ORDER = {"lora": 0, "full": 1}
REGIME_NAMES = {"lora": "LoRA", "full": "Full fine-tuning"}
PARTIAL, MISSING = "‡", "†"


def _fmt(x, nd=3):
    return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.{nd}f}"


def _tag(fp: str) -> str:
    return fp.split(":", 1)[1] if fp.startswith("exp:") else fp[:6]


def model_label(model: str) -> str:
    """'7B' / '13B' for billion-scale models (the paper's column names), else the name."""
    P = model_params(str(model))
    return f"{P / 1e9:.0f}B" if P and P >= 1e9 else Path(str(model)).name


def group_order(pool: str, model: str) -> tuple:
    P = model_params(str(model))
    return (POOL_ORDER.get(pool, 9), str(pool), P if P else math.inf, str(model))


# --------------------------------------------------------------------------- cells
def cells(rows: pd.DataFrame, judges: list[str] | None = None) -> pd.DataFrame:
    """One row per cell of one judge group. ``judges``: the judges the table names (default:
    every judge in ``rows``). A seed is complete when every named judge judged it; see the
    module docstring for how incomplete cells are shown."""
    expected = sorted(set(judges if judges is not None else rows.judge))
    meta_cols = [c for c in ("paper_name", "family", "ablation_of", "ablation_label",
                             "report_rank", "setting_desc") if c in rows]
    per_seed = rows.groupby(CELL_KEYS + ["seed"], as_index=False, dropna=False).agg(
        pws=("pws", "mean"), judges=("judge", lambda s: tuple(sorted(set(s)))),
        **{c: (c, "first") for c in meta_cols})
    per_seed["complete"] = [list(j) == expected for j in per_seed.judges]
    out = []
    for key, g in per_seed.groupby(CELL_KEYS, dropna=False):
        done = g[g.complete]
        use = done if len(done) else g
        row = dict(zip(CELL_KEYS, key))
        row.update({c: g[c].iloc[0] for c in meta_cols})
        row.update(pws_mean=float(use.pws.mean()),
                   pws_sd=float(use.pws.std(ddof=1)) if len(use) > 1 else float("nan"),
                   n_seeds=len(use), n_seeds_all=len(g),
                   seeds=",".join(str(s) for s in sorted(use.seed)),
                   judges=", ".join(expected),
                   status="complete" if len(done) == len(g) else ("partial" if len(done) else "missing"),
                   have=", ".join(sorted({j for js in g.judges for j in js})))
        out.append(row)
    return pd.DataFrame(out)


def cell_text(r) -> str:
    text = _fmt(r["pws_mean"]) if r["n_seeds"] <= 1 else \
        f"{_fmt(r['pws_mean'])} ± {_fmt(r['pws_sd'])} (n={r['n_seeds']})"
    if r.get("status") == "partial":
        text += f" {PARTIAL}"
    elif r.get("status") == "missing":
        text += f" {MISSING}"
    return text


def _marks(c: pd.DataFrame) -> list[str]:
    notes = []
    if (c.get("status") == "partial").any():
        notes.append(f"{PARTIAL} some seeds of this cell lack one of the judges ({c.judges.iloc[0]}): "
                     f"the value is over the seeds that have all of them (the others are in "
                     f"All results)")
    miss = c[c.get("status") == "missing"] if "status" in c else c.iloc[:0]
    for r in miss.itertuples():
        notes.append(f"{MISSING} {r.paper_name or r.selector} {r.regime} {r.pool} / {r.model} / "
                     f"{r.ratio:.0%}: only {r.have} of the judges {r.judges}; not comparable "
                     f"with the other cells and never averaged with them")
    return notes


def pivot(c: pd.DataFrame, full_column: bool = True, text_fn=None) -> tuple[str, list[str]]:
    """Markdown of cells in the paper layout; returns (table, notes under it)."""
    c = c.copy()
    text_fn = text_fn or cell_text
    n_set = c.groupby(["pool", "model", "ratio", "regime"])["setting_fp"].transform("nunique")
    tagged = set(zip(c.pool[n_set > 1], c.model[n_set > 1], c.ratio[n_set > 1]))
    groups = sorted({(p, m) for p, m in zip(c.pool, c.model)}, key=lambda g: group_order(*g))
    cols: list[tuple] = []  # (pool, model, ratio | None=100%, setting tag | None)
    for pool, model in groups:
        g = c[(c.pool == pool) & (c.model == model)]
        for ratio in sorted(set(g.ratio)):
            fps = sorted(set(g[g.ratio == ratio].setting_fp)) if (pool, model, ratio) in tagged else [None]
            cols += [(pool, model, ratio, fp) for fp in fps]
        if full_column:
            cols.append((pool, model, None, None))

    def col_label(col) -> str:
        pool, model, ratio, fp = col
        label = f"{POOL_NAMES.get(pool, pool)} / {model_label(model)} / " + \
            ("100%" if ratio is None else f"{ratio:.0%}")
        return label + (f" [{_tag(fp)}]" if fp else "")

    n_fp = c.groupby("selector")["selector_fp"].transform("nunique")
    names = c.paper_name.fillna(c.selector) if "paper_name" in c else c.selector
    dup = names.groupby(names).transform(lambda s: len(set(c.loc[s.index, "selector"])))
    c["row"] = [f"{n} (`{s}`)" if d > 1 else n for n, s, d in zip(names, c.selector, dup)]
    c["row"] = [f"{r} [{_tag(fp)}]" if k > 1 else r for r, fp, k in zip(c.row, c.selector_fp, n_fp)]
    c["_rank"] = c.report_rank.fillna(50) if "report_rank" in c else 50
    body = []
    for regime in sorted(set(c.regime), key=lambda r: (REGIME_ORDER.get(r, 9), str(r))):
        block = c[c.regime == regime].sort_values(["_rank", "row"], kind="stable")
        body.append([f"**{REGIME_NAMES.get(regime, regime)}**"] + [""] * len(cols))
        for row in dict.fromkeys(block.row):
            sub = block[block.row == row]
            vals = []
            for pool, model, ratio, fp in cols:
                if ratio is None:
                    have = ((sub.pool == pool) & (sub.model == model)).any()
                    vals.append("1.00" if have else "")
                    continue
                hit = sub[(sub.pool == pool) & (sub.model == model) & (sub.ratio == ratio)
                          & ((sub.setting_fp == fp) if fp else True)]
                vals.append(text_fn(hit.iloc[0].to_dict()) if len(hit) else "")
            body.append([row, *vals])
    table = tabulate(body, headers=["selector", *[col_label(k) for k in cols]], tablefmt="github",
                     disable_numparse=True)
    notes = []
    mapping = sorted(set(zip(c.row, c.selector)), key=lambda x: x[0])
    notes.append("Rows (name in the table = selector id): " + "; ".join(
        f"{r} = `{s}`" for r, s in mapping) + ".")
    if tagged:
        desc = dict(zip(c.setting_fp, c.setting_desc)) if "setting_desc" in c else {}
        notes += [f"Setting [{_tag(fp)}]: {desc.get(fp) or fp}" for fp in sorted(set(c.setting_fp))]
    notes += _marks(c)
    return table, notes


def _block(title: str, table: str, notes: list[str]) -> str:
    return f"**{title}**\n\n{table}\n\n" + "".join(f"- {n}\n" for n in notes)


# --------------------------------------------------------------------------- the tables
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


CONTROLLED = (("lc_pws", "length-controlled PWS (LC-PWS: the score predicted at equal answer "
                "length)"),
              ("sc_pws", "style-controlled PWS (equal length, headers, list items and bold)"))


def controlled_cells(g: pd.DataFrame, column: str) -> pd.DataFrame:
    """Cells of ``column`` (lc_pws / sc_pws) in place of PWS, over the judges the PWS table
    names: a result without the controlled value (no per-prompt judgments) counts as a
    missing judge, so its cell is marked exactly as a PWS cell would be."""
    have = g[g[column].notna()] if column in g else g.iloc[:0]
    if have.empty:
        return pd.DataFrame()
    return cells(have.assign(pws=have[column]), judges=sorted(set(g.judge)))


def table1_paper(df: pd.DataFrame, eval_set: str = "pooled") -> str:
    """Table 1 for every judge group: PWS per cell (see the module docstring), then the same
    table of length- and style-controlled PWS (:mod:`.controlled`) where they were fitted."""
    sub = df[df.eval_set == eval_set]
    if sub.empty:
        return f"_no results for eval set {eval_set}_\n"
    out = []
    for title, g in judge_groups(sub):
        out.append(_block(title, *pivot(cells(g))))
        for col, what in CONTROLLED:
            c = controlled_cells(g, col)
            if not c.empty:
                out.append(_block(f"{title}: {what}", *pivot(c)))
    return "\n".join(out)


def table1(df: pd.DataFrame) -> str:
    llm = df[(df.eval_set == "pooled") & (df.judge_kind != "offline")]
    if llm.empty:
        return "_no finished runs judged by an LLM_\n"
    table, notes = pivot(cells(llm))
    extra = ""
    for col, what in CONTROLLED:
        c = controlled_cells(llm, col)
        if not c.empty:
            extra += "\n" + _block(f"Table 1, {what}", *pivot(c))
    notes.insert(0, f"PWS pooled over eval sets vs the full-data model of the same setting (LLM "
                    f"judges: {', '.join(sorted(set(llm.judge)))}; a cell's value is the mean "
                    f"over them, per seed; several seeds: mean ± sd (n)). Unparsed prompts are "
                    f"left out (see PWS-compat below).")
    return table + "\n\n" + "".join(f"- {n}\n" for n in notes) + _notes(llm) + extra


def table_offline(df: pd.DataFrame) -> str:
    pooled = df[(df.eval_set == "pooled") & (df.judge_kind == "offline")]
    if pooled.empty:
        return ""
    out = []
    for judge, sub in pooled.groupby("judge"):
        out.append(_block(f"{judge} (offline, not an LLM)", *pivot(cells(sub))))
        for col, what in CONTROLLED:
            c = controlled_cells(sub, col)
            if not c.empty:
                out.append(_block(f"{judge} (offline, not an LLM): {what}", *pivot(c)))
    return ("## Judge-free and non-LLM metrics (never mixed into Table 1)\n\n"
            + "\n".join(out) + _notes(pooled))


def table2_paper(df: pd.DataFrame, eval_set: str = "pooled") -> str:
    """Table 2: each ablation as a PWS delta against the selector it ablates (``ablation_of``
    of its results) in the same cell (same setting, regime, ratio); the base row absolute.
    Covers every column group that has ablation results."""
    sub = df[df.eval_set == eval_set]
    abl = sub[sub.ablation_of.notna()] if "ablation_of" in sub else sub.iloc[:0]
    if abl.empty:
        return "_no ablation was run (e.g. selectors gsnr-drop, gsnr-reldrop, gsnr-drop-var)_\n"
    bases = set(abl.ablation_of)
    sub = sub[sub.selector.isin(bases) | sub.ablation_of.isin(bases)]
    out = []
    keys = ["regime", "pool", "model", "ratio", "setting_fp"]
    for title, g in judge_groups(sub):
        c = cells(g)
        base = {tuple(r[k] for k in keys) + (r["selector"],): r
                for r in c[c.selector.isin(bases)].to_dict("records")}

        def text(r, base=base):
            if r["selector"] in bases:
                return cell_text(r)
            b = base.get(tuple(r[k] for k in keys) + (r["ablation_of"],))
            if b is None:
                return f"{cell_text(r)} (no {r['ablation_of']})"
            if r["status"] != "complete" or b["status"] != "complete":
                return f"n/a {MISSING} (judges missing)"
            return f"{r['pws_mean'] - b['pws_mean']:+.3f}"

        c = c.copy()
        c["paper_name"] = [f"{p}: {lab}" if isinstance(lab, str) and lab else p
                           for p, lab in zip(c.paper_name, c.ablation_label)]
        table, notes = pivot(c, full_column=False, text_fn=text)
        out.append(_block(title, table, notes))
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
                     *_controlled_text(r),
                     _fmt(r.position_consistency, 2), _fmt(r.selection_seconds, 1),
                     _tag(str(r.setting_fp))])
    return tabulate(body, headers=["selector", "regime", "pool", "model", "ratio", "seed",
                                   "eval set", "judge", "W/T/L", "unparsed", "PWS",
                                   "PWS-compat", "95% CI", "LC-PWS [95% CI]",
                                   "style-PWS [95% CI]", "pos. consist.", "selection s",
                                   "setting"], tablefmt="github", disable_numparse=True)


def _controlled_text(r) -> list[str]:
    out = []
    for pre in ("lc", "sc"):
        v = getattr(r, f"{pre}_pws", None)
        if v is None or pd.isna(v):
            out.append("")
        else:
            out.append(f"{_fmt(v)} [{_fmt(getattr(r, f'{pre}_lo'), 2)}, {_fmt(getattr(r, f'{pre}_hi'), 2)}]")
    return out


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
                         f"seed {r.seed}, judge {r.judge}, setting [{_tag(str(r.setting_fp))}]: {w}")
    if not lines:
        return ""
    return "\n## Warnings\n\n" + "\n".join(sorted(set(lines))) + "\n"


LEGEND = ("PWS = 1 + (W - L) / (W + T + L). **PWS** leaves prompts with an unparsed judge "
          "completion out (counted in `unparsed`); **PWS-compat** is the Cherry/Superfiltering "
          "rule, where an unparsed order counts as a tie. **LC-PWS** / **style-PWS**: the PWS "
          "predicted if the subset model's answers had the full-data model's length (and "
          "markdown style), from one logistic fit per judge over all its comparisons "
          "(selbench.leaderboard.lengthctl); blank where no per-prompt judgments exist.\n")


def render(df: pd.DataFrame) -> str:
    return ("# selbench leaderboard\n\n" + table1(df) + "\n" + table_offline(df)
            + warnings_section(df)
            + "\n## All results\n\n" + LEGEND + "\n" + details(df) + "\n")


def with_controlled(runs_dir: Path, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the LC-PWS / style-PWS columns, fitted from the judgments and answers of
    its results (:func:`.controlled.add_controlled`)."""
    if df.empty or "result_dir" not in df:
        return df
    pooled = df[df.eval_set == "pooled"]
    prompts = prompt_rows(Path(runs_dir).resolve(), pooled, [])
    return add_controlled(df, prompts)[0]


def write_leaderboard(runs_dir: Path) -> tuple[Path, Path]:
    runs_dir = Path(runs_dir)
    try:  # the study columns (reference NLL, lengths, costs) join the CSV
        df = collect_study(runs_dir)
    except Exception as e:  # noqa: BLE001 - never lose the leaderboard over an extra column
        print(f"[warn]   study columns left out of the leaderboard: {type(e).__name__}: {e}")
        df = collect(runs_dir)
    try:  # length- and style-controlled PWS next to every PWS
        df = with_controlled(runs_dir, df)
    except Exception as e:  # noqa: BLE001
        print(f"[warn]   LC-PWS / style-PWS left out of the leaderboard: {type(e).__name__}: {e}")
    runs_dir.mkdir(parents=True, exist_ok=True)
    csv, md = runs_dir / "leaderboard.csv", runs_dir / "leaderboard.md"
    df.to_csv(csv, index=False)
    md.write_text(render(df))
    return csv, md
