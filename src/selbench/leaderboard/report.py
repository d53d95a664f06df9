"""Study sections rendered from the study CSV (``study.collect_study``) and the judged
per-prompt rows (``judgments.jsonl``): what a gap means (MDE, paired bootstrap, seeds),
whether judges agree, length bias, costs, reference NLL. Nothing is recomputed."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from .render import _fmt, _tag, cells, judge_groups
from .stats import PRIOR_S2, PRIOR_TAU, judge_agreement, mde_pws, paired_bootstrap, seed_summary
from .study import prompt_outcomes

PAPER_PROMPTS = 298  # WizardLM 218 + Vicuna 80


def _md(body, headers) -> str:
    if not body:
        return "_none_\n"
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


def _flops(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    for unit, f in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if x >= f:
            return f"{x / f:.1f} {unit}"
    return f"{x:.2g} FLOP"


def pooled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.eval_set == "pooled"]


# --------------------------------------------------------------------------- MDE
def variance_estimates(df: pd.DataFrame) -> tuple[float, float, int]:
    """(per-prompt outcome variance s2 from the W/T/L counts, seed variance tau2 of PWS
    from cells with several seeds (NaN if none), number of cells that gave tau2)."""
    p = pooled(df)
    n = (p.win + p.tie + p.lose).astype(float)
    ok = n > 1
    if ok.any():
        mean = (p.win - p.lose)[ok] / n[ok]
        ex2 = (p.win + p.lose)[ok] / n[ok]
        s2 = float(np.average((ex2 - mean ** 2) * n[ok] / (n[ok] - 1), weights=n[ok]))
    else:
        s2 = float("nan")
    taus = []
    for _, g in judge_groups(p):
        c = cells(g)
        per_seed = g.groupby(["selector", "selector_fp", "regime", "pool", "model", "ratio",
                              "setting_fp", "seed"], dropna=False)["pws"].mean().reset_index()
        for _, cell in per_seed.groupby(["selector", "selector_fp", "regime", "pool", "model",
                                         "ratio", "setting_fp"], dropna=False):
            if len(cell) > 1:
                taus.append(float(cell.pws.var(ddof=1)))
        del c
    tau2 = float(np.mean(taus)) if taus else float("nan")
    return s2, tau2, len(taus)


def mde_section(df: pd.DataFrame) -> str:
    p = pooled(df)
    if p.empty:
        return "_no results_\n"
    s2, tau2, n_tau = variance_estimates(df)
    n_prompts = int(np.median(p.win + p.tie + p.lose))
    seeds = int(p.groupby(["selector", "ratio", "setting_fp"]).seed.nunique().max())
    # an estimate of 0 (every prompt tied, identical seeds) says nothing about a real study:
    # the prior is used and the note says so
    s2u = s2 if math.isfinite(s2) and s2 > 0 else PRIOR_S2
    tau2u = tau2 if math.isfinite(tau2) and tau2 > 0 else PRIOR_TAU ** 2
    body = []
    for label, n, k in [("this study", n_prompts, 1), ("this study", n_prompts, seeds),
                        ("this study", n_prompts, 3), ("paper scale", PAPER_PROMPTS, 1),
                        ("paper scale", PAPER_PROMPTS, 3)]:
        row = [label, n, k, _fmt(mde_pws(n, k, s2u, tau2u), 2)]
        if row not in body:
            body.append(row)
    note = (f"Minimum detectable PWS difference between two selectors of one cell (two-sided, "
            f"alpha 0.05, power 0.8): `MDE = (z_0.975 + z_0.8) * sqrt(2 (s2/n + tau2) / k)` for "
            f"n prompts and k seeds per selector. Estimated here: per-prompt outcome variance "
            f"s2 = {_fmt(s2u, 3)}" + (" (from the W/T/L counts)" if s2u == s2 else
                                      f" (prior 2/3: the results give {_fmt(s2, 3)})")
            + f", seed variance tau2 = {_fmt(tau2u, 4)}"
            + (f" (from {n_tau} cell(s) with several seeds)" if tau2u == tau2
               else f" (prior sd {PRIOR_TAU}: " + (f"the {n_tau} cell(s) with several seeds give "
                                                   f"{_fmt(tau2, 4)})" if n_tau else "no cell has several seeds)"))
            + ". **A PWS gap smaller than the MDE of its row is not evidence of a difference.**\n\n")
    return note + _md(body, ["scale", "prompts n", "seeds k", "MDE (PWS)"])


# --------------------------------------------------------------------------- seeds
def seeds_section(df: pd.DataFrame) -> str:
    out = []
    for title, g in judge_groups(pooled(df)):
        body = []
        per_seed = g.groupby(["selector", "selector_fp", "regime", "pool", "model", "ratio",
                              "setting_fp", "seed"], dropna=False).agg(
            pws=("pws", "mean"), lo=("ci95_lo", "mean"), hi=("ci95_hi", "mean")).reset_index()
        for k, cell in per_seed.groupby(["selector", "selector_fp", "regime", "pool", "model",
                                         "ratio", "setting_fp"], dropna=False):
            ss = seed_summary(list(cell.pws), (cell.lo.iloc[0], cell.hi.iloc[0]))
            body.append([k[0], k[2], f"{k[5]:.0%}", ss["n"], ",".join(str(s) for s in cell.seed),
                         _fmt(ss["mean"]), _fmt(ss["sd"]),
                         f"[{_fmt(ss['ci95'][0], 2)}, {_fmt(ss['ci95'][1], 2)}]",
                         "seeds (t)" if ss["n"] > 1 else "prompts (bootstrap)", _tag(str(k[6]))])
        out.append(f"**{title}**\n\n" + _md(body, ["selector", "regime", "ratio", "n", "seeds",
                                                    "PWS mean", "sd", "95% CI", "CI over",
                                                    "setting"]))
    return "\n".join(out)


# --------------------------------------------------------------------------- paired
def per_prompt_means(runs_dir: Path, rows: pd.DataFrame) -> dict:
    """(eval set, id) -> outcome, one selector in one cell; several seeds: a prompt's value is
    the mean over seeds of +1/0/-1 (returned as floats keyed the same)."""
    vals: dict = {}
    for r in rows.itertuples(index=False):
        if not r.result_dir:
            continue
        for k, o in prompt_outcomes(runs_dir, r.result_dir).items():
            if o in ("win", "tie", "lose"):
                vals.setdefault(k, []).append({"win": 1, "tie": 0, "lose": -1}[o])
    return {k: float(np.mean(v)) for k, v in vals.items()}


def _paired(a: dict, b: dict, n_boot: int = 4000, seed: int = 0) -> dict:
    # paired_bootstrap works on outcomes; seed means are numbers: map through the same code
    keys = sorted(k for k in a if k in b)
    if not keys:
        return {"diff": float("nan"), "ci95": (float("nan"),) * 2, "p_a_better": float("nan"), "n": 0}
    if all(a[k] in (-1.0, 0.0, 1.0) and b[k] in (-1.0, 0.0, 1.0) for k in keys):
        lab = {1.0: "win", 0.0: "tie", -1.0: "lose"}
        return paired_bootstrap({k: lab[a[k]] for k in keys}, {k: lab[b[k]] for k in keys},
                                n_boot, seed)
    d = np.array([a[k] - b[k] for k in keys])
    boots = d[np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"diff": float(d.mean()), "ci95": (float(lo), float(hi)),
            "p_a_better": float(((boots > 0).sum() + 0.5 * (boots == 0).sum()) / n_boot),
            "n": len(d)}


def paired_section(df: pd.DataFrame, runs_dir: Path) -> str:
    out = []
    for title, g in judge_groups(pooled(df)):
        body = []
        for (setting, ratio, regime), cell in g.groupby(["setting_fp", "ratio", "regime"]):
            sels = sorted(set(zip(cell.selector, cell.selector_fp)))
            means = {s: per_prompt_means(runs_dir, cell[(cell.selector == s[0]) & (cell.selector_fp == s[1])])
                     for s in sels}
            for a, b in itertools.combinations(sels, 2):
                r = _paired(means[a], means[b])
                if not r["n"]:
                    continue
                body.append([f"{ratio:.0%}", regime, a[0], b[0], r["n"], f"{r['diff']:+.3f}",
                             f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]",
                             _fmt(r["p_a_better"], 2),
                             "yes" if r["ci95"][0] > 0 or r["ci95"][1] < 0 else "no",
                             _tag(str(setting))])
        out.append(f"**{title}**\n\n" + _md(body, ["ratio", "regime", "A", "B", "prompts",
                                                    "PWS A - B", "95% CI (paired bootstrap)",
                                                    "P(A beats B)", "CI excludes 0", "setting"]))
    note = ("Both selectors of a row are judged against the same full-data model on the same "
            "prompts; the bootstrap resamples prompts (4,000 resamples, the same resample for "
            "A and B). With several seeds a prompt's value is its mean over seeds (seed "
            "variance is in the seeds table, not in this CI). P(A beats B) = share of "
            "resamples with PWS_A > PWS_B.\n\n")
    return note + "\n".join(out)


# --------------------------------------------------------------------------- judges
def agreement_section(df: pd.DataFrame, runs_dir: Path) -> str:
    p = pooled(df)
    body = []
    for (exp, a, b), g in p.groupby(["experiment", "model_a", "model_b"]):
        if g.judge.nunique() < 2:
            continue
        outs = {r.judge: prompt_outcomes(runs_dir, r.result_dir) for r in g.itertuples() if r.result_dir}
        for ag in judge_agreement(outs):
            body.append([g.selector.iloc[0], f"{g.ratio.iloc[0]:.0%}", g.seed.iloc[0],
                         ag["judge_a"], ag["judge_b"], ag["n"], _fmt(ag["agreement"], 2),
                         _fmt(ag["kappa"], 2)])
    if not body:
        return ("_every comparison here has a single judge: no agreement to compute (run "
                "several judges, e.g. `judges: [gpt-5.1, qwen3-235b-instruct]`)_\n")
    return ("Per prompt W/T/L of two judges on the same comparison: share of prompts with the "
            "same outcome and Cohen's kappa (prompts both parsed).\n\n"
            + _md(body, ["selector", "ratio", "seed", "judge A", "judge B", "prompts",
                         "agreement", "kappa"]))


def consistency_section(df: pd.DataFrame) -> str:
    p = pooled(df)
    body = [[r.judge, r.selector, f"{r.ratio:.0%}", r.seed, f"{r.win}/{r.tie}/{r.lose}",
             r.unparsed, _fmt(r.position_consistency, 2)] for r in p.itertuples()]
    return _md(body, ["judge", "selector", "ratio", "seed", "W/T/L", "unparsed",
                      "position consistency"])


def length_section(df: pd.DataFrame) -> str:
    p = pooled(df)
    body = []
    for r in p.itertuples():
        body.append([r.judge, r.selector, f"{r.ratio:.0%}", r.seed, _fmt(r.len_a, 1),
                     _fmt(r.len_b, 1), _fmt(r.longer_won, 2), r.n_decided])
    overall = p.dropna(subset=["longer_won"])
    tot = ""
    if len(overall):
        for j, g in overall.groupby("judge"):
            w = (g.longer_won * g.n_decided).sum() / max(g.n_decided.sum(), 1)
            tot += f"- {j}: the longer answer won {w:.0%} of {int(g.n_decided.sum())} decided prompts\n"
    return ("Mean answer length in words of the subset model (A) and the full-data model (B); "
            "'longer won' = share of decided prompts (win or lose, lengths differ) where the "
            "longer answer won: 0.5 is no length preference.\n\n"
            + _md(body, ["judge", "selector", "ratio", "seed", "words A", "words B (full)",
                         "longer won", "decided"]) + ("\n" + tot if tot else ""))


# --------------------------------------------------------------------------- cost, NLL
def cost_section(df: pd.DataFrame) -> str:
    p = pooled(df).drop_duplicates(subset=["experiment", "model_a"])
    body = []
    for r in p.itertuples():
        body.append([r.selector, r.regime, f"{r.ratio:.0%}", r.seed, r.n_selected,
                     _fmt(r.selection_seconds, 1), r.selection_device or "", _flops(r.proxy_flops),
                     _fmt(r.train_seconds, 1), r.train_steps if r.train_steps is not None else "",
                     _fmt(r.full_train_seconds, 1), _fmt(r.pws), _fmt(r.refnll, 3)])
    return ("Selection wall time includes upstream proxy work charged to the selection (e.g. "
            "the gradient profile, shared by every selector that uses it but charged to each); "
            "proxy FLOPs are an estimate (see method notes). PWS is the first judge's.\n\n"
            + _md(body, ["selector", "regime", "ratio", "seed", "selected", "selection s",
                         "device", "proxy FLOPs (est.)", "train s", "train steps",
                         "full-data train s", "PWS", "ref. NLL"]))


def refnll_section(df: pd.DataFrame) -> str:
    p = df.drop_duplicates(subset=["experiment", "model_a", "eval_set"])
    p = p.dropna(subset=["refnll"])
    if p.empty:
        return "_no reference-NLL stage found (runs older than the refnll stage: rerun `bench grid` / `bench run`, it computes only that stage)_\n"
    sets = [s for s in ["pooled", *sorted(set(p.eval_set) - {"pooled"})]]
    body = []
    for (sel, reg, ratio, seed), g in p.groupby(["selector", "regime", "ratio", "seed"]):
        vals = dict(zip(g.eval_set, g.refnll))
        full = dict(zip(g.eval_set, g.refnll_full))
        body.append([sel, reg, f"{ratio:.0%}", seed, *[_fmt(vals.get(s), 3) for s in sets],
                     _fmt(full.get("pooled"), 3)])
    return ("Mean token NLL of each fine-tuned model on the gpt-3.5-turbo reference answers "
            "(DiverseEvol), prompt rendered with the generation template; lower is better. "
            "`pooled` is token-weighted over every reference set, koala included (koala is "
            "scored here even when it is not judged). Judge-free: never mixed with PWS.\n\n"
            + _md(body, ["selector", "regime", "ratio", "seed", *[f"NLL {s}" for s in sets],
                         "NLL full-data (pooled)"]))
