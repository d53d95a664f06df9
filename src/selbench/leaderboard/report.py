"""Study sections, all drawn from a :class:`~.data.StudyData` (never from a runs folder):
controls and power first, then what a gap means (MDE, paired comparisons, seeds), judges,
length, reference NLL and cost. Every table keys its rows by the comparison: setting,
regime, ratio, selector (and its config), seeds and the judge group.

Per-prompt values: ``v`` = +1 (subset model wins against the full-data model), 0 (tie), -1
(loses), from both display orders; in a judge group with several judges a prompt's value is
their mean; in a cell with several seeds, paired comparisons and CIs use the per-prompt value
averaged over the seeds (:func:`~.stats.cell_bootstrap`): one kind of CI everywhere.
"""
from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict

import numpy as np
import pandas as pd
from tabulate import tabulate

from ..estimates import fmt_flops
from .controlled import has_controlled, judge_preferences_md
from .data import StudyData
from .render import _fmt, _tag, judge_groups
from .stats import PRIOR, VAL, Variance, cell_bootstrap, estimate_variance, judge_agreement, mde

PAPER_PROMPTS = 298  # WizardLM 218 + Vicuna 80
CONTROLS = ("oracle-clean", "oracle-corrupt")
CELL = ["setting_fp", "regime", "ratio", "selector", "selector_fp"]


def _md(body, headers) -> str:
    if not body:
        return "_none_\n"
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) + "\n"


def pooled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.eval_set == "pooled"]


# --------------------------------------------------------------------------- per-prompt values
def prompt_values(data: StudyData) -> dict[str, dict[tuple, dict[int, dict[tuple, float]]]]:
    """judge group title -> cell key (CELL) -> seed -> (eval set, id) -> value."""
    p = data.prompts
    out: dict = {}
    if p.empty:
        return out
    p = p[p.outcome.isin(list(VAL))].copy()
    p["v"] = p.outcome.map(VAL).astype(float)
    for title, g in judge_groups(p):
        cells: dict = defaultdict(lambda: defaultdict(dict))
        m = g.groupby(CELL + ["seed", "eval_set", "id"], dropna=False)["v"].mean()
        for key, v in m.items():
            *cell, seed, es, pid = key
            cells[tuple(cell)][int(seed)][(es, str(pid))] = float(v)
        out[title] = cells
    return out


def nll_values(data: StudyData) -> dict[tuple, dict[int, dict[tuple, float]]]:
    """cell key -> seed -> (eval set, id) -> mean token NLL of the subset model (judge-free)."""
    r, res = data.refnll, pooled(data.results)
    if r.empty or res.empty:
        return {}
    per = {(e, t): g for (e, t), g in r.groupby(["experiment", "train_key"])}
    out: dict = defaultdict(dict)
    for x in res.drop_duplicates(subset=["experiment", "model_a"]).itertuples():
        g = per.get((x.experiment, str(x.model_a).rsplit("-", 1)[0]))
        if g is None:
            continue
        ok = g[g.tokens > 0]
        out[tuple(getattr(x, c) for c in CELL)][int(x.seed)] = {
            (es, str(i)): s / t for es, i, s, t in zip(ok.eval_set, ok.id, ok.nll_sum, ok.tokens)}
    return out


def _pairs(cells: dict) -> list[tuple]:
    """Pairs of cells of different selectors in the same setting, regime and ratio."""
    by = defaultdict(list)
    for c in cells:
        by[c[:3]].append(c)
    return [(a, b) for group in by.values() for a, b in itertools.combinations(sorted(group), 2)
            if (a[3], a[4]) != (b[3], b[4])]


def paired(a: dict, b: dict, n_boot: int = 4000, seed: int = 0) -> dict:
    """Paired bootstrap over prompts of the difference of seed-averaged per-prompt values."""
    ma = {k: np.mean([s[k] for s in a.values() if k in s]) for k in set.union(*map(set, a.values()))}
    mb = {k: np.mean([s[k] for s in b.values() if k in s]) for k in set.union(*map(set, b.values()))}
    keys = sorted(set(ma) & set(mb))
    if not keys:
        return {"diff": float("nan"), "ci95": (float("nan"),) * 2, "p_a_better": float("nan"), "n": 0}
    d = np.array([ma[k] - mb[k] for k in keys])
    boots = d[np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"diff": float(d.mean()), "ci95": (float(lo), float(hi)), "n": len(d),
            "se": float(boots.std(ddof=1)),
            "p_a_better": float(((boots > 0).sum() + 0.5 * (boots == 0).sum()) / n_boot)}


def seed_shift(nulls: list[dict]) -> float | None:
    """tau^2, the variance of a training seed's global shift of a metric, from its null
    comparisons (two seeds of one selector, each difference d with prompt-only bootstrap
    standard error se): E[d^2] = 2 tau^2 + se^2, so tau^2 = max(0, mean(d^2 - se^2) / 2).
    The prompt bootstrap alone holds the models fixed; a metric whose seeds differ by more
    than that (a continuous one like reference NLL) needs tau^2 in every comparison. None
    without null comparisons."""
    vals = [x["diff"] ** 2 - x.get("se", 0.0) ** 2 for x in nulls if x.get("n")]
    return max(0.0, float(np.mean(vals)) / 2) if vals else None


def with_seed_noise(r: dict, tau2: float | None, ka: int, kb: int) -> dict:
    """``r`` (a paired comparison) with the seed noise added to its CI: se_total^2 = se^2 +
    tau^2 (1/k_A + 1/k_B) for k_A, k_B seeds; the prompt-only CI is kept as ``ci95_prompts``."""
    if tau2 is None or not r.get("n") or not np.isfinite(r.get("se", np.nan)):
        return {**r, "ci95_prompts": r["ci95"], "seed_noise": None}
    se = float(np.sqrt(r["se"] ** 2 + tau2 * (1.0 / ka + 1.0 / kb)))
    ci = (r["diff"] - 1.959964 * se, r["diff"] + 1.959964 * se) if tau2 > 0 else r["ci95"]
    return {**r, "ci95_prompts": r["ci95"], "ci95": ci, "seed_noise": float(np.sqrt(tau2))}


def _excludes0(ci) -> bool:
    return bool(ci[0] > 0 or ci[1] < 0)


def _name(cell: tuple) -> str:
    return cell[3]


# --------------------------------------------------------------------------- controls
def null_comparisons(cells: dict) -> list[dict]:
    """Every pair of seeds of the same selector in one cell: a null comparison (no real
    difference can exist), with its paired CI."""
    out = []
    for c, seeds in cells.items():
        for s1, s2 in itertools.combinations(sorted(seeds), 2):
            r = paired({s1: seeds[s1]}, {s2: seeds[s2]})
            out.append({"cell": c, "a": s1, "b": s2, **r, "excludes0": _excludes0(r["ci95"])})
    return out


def controls(data: StudyData) -> dict:
    """Null control (seeds of one selector) and positive control (oracle-clean vs
    oracle-corrupt on the planted-corruption pool) per judge group and for reference NLL."""
    out = {}
    groups = dict(prompt_values(data))
    nll = nll_values(data)
    if nll:
        groups["reference NLL (lower is better)"] = {c: {s: {k: -v for k, v in d.items()}
                                                        for s, d in seeds.items()}
                                                    for c, seeds in nll.items()}
    for title, cells in groups.items():
        nulls = null_comparisons(cells)
        tau2 = seed_shift(nulls)
        pos = []
        for a, b in _pairs(cells):
            if {a[3], b[3]} == set(CONTROLS):
                good, bad = (a, b) if a[3] == "oracle-clean" else (b, a)
                r = with_seed_noise(paired(cells[good], cells[bad]), tau2, len(cells[good]),
                                    len(cells[bad]))
                pos.append({"setting_fp": a[0], "regime": a[1], "ratio": a[2], **r,
                            "separates": r["ci95"][0] > 0})
        out[title] = {"null": nulls, "positive": pos, "tau2": tau2}
    return out


def has_power(ctrl: dict) -> bool | None:
    """True if every positive control separates, False if one does not, None if none ran."""
    pos = [p for g in ctrl.values() for p in g["positive"]]
    return None if not pos else all(p["separates"] for p in pos)


def power_by_metric(ctrl: dict) -> dict[str, bool]:
    """Metric (judge group or reference NLL) -> whether all its positive controls separate;
    metrics without a positive control are left out."""
    return {t: all(p["separates"] for p in g["positive"]) for t, g in ctrl.items() if g["positive"]}


def _mixed_power(ctrl: dict) -> str:
    by = power_by_metric(ctrl)
    yes = [t for t, v in by.items() if v]
    no = [t for t, v in by.items() if not v]
    if not (yes and no):
        return ""
    return (f"The positive control separates on {', '.join(yes)} but **not on {', '.join(no)}**: "
            f"the study has power on the first and none on the second, whose differences cannot "
            f"be told from noise at this scale.")


def controls_section(data: StudyData) -> str:
    ctrl = controls(data)
    if not ctrl:
        return "_no per-prompt results_\n"
    lines = []
    power = has_power(ctrl)
    mixed = _mixed_power(ctrl)
    if mixed:
        lines.append(f"> {mixed}\n")
    elif power is False:
        lines.append("> **This study has no power at its scale: the positive control (oracle-clean "
                     "vs oracle-corrupt on planted corruption) does not separate. No difference "
                     "below can be told from noise.**\n")
    elif power is None:
        lines.append("> **No positive control ran (oracle-clean / oracle-corrupt on a pool with "
                     "planted corruption, `bench corrupt`): the study cannot show it has power.**\n")
    for title, g in ctrl.items():
        body = [[f"{p['ratio']:.0%}", p["regime"], p["n"], f"{p['diff']:+.3f}",
                 f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]", "yes" if p["separates"] else "**no**",
                 _tag(str(p["setting_fp"]))] for p in g["positive"]]
        lines.append(f"**Positive control, {title}**: oracle-clean minus oracle-corrupt (paired "
                     f"bootstrap over prompts)\n\n" + _md(body, ["ratio", "regime", "prompts", "difference",
                                                                "95% CI", "separates", "setting"]))
        nulls = g["null"]
        if g.get("tau2"):
            lines.append(f"_Training-seed noise of this metric: a seed shifts it by sd "
                         f"{np.sqrt(g['tau2']):.4g} (from the null comparisons below); the "
                         f"positive control above and every paired comparison add it to their "
                         f"CI (diff +- 1.96 sqrt(se_prompts^2 + tau^2 (1/k_A + 1/k_B))); the "
                         f"null control's own CIs are prompt-only, which is what it tests._\n")
        if nulls:
            k = sum(x["excludes0"] for x in nulls)
            body = [[x["cell"][3], f"{x['cell'][2]:.0%}", f"{x['a']} vs {x['b']}", x["n"],
                     f"{x['diff']:+.3f}", f"[{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]",
                     "yes" if x["excludes0"] else "no", _tag(str(x["cell"][0]))] for x in nulls]
            lines.append(f"**Null control, {title}**: the same selector with two seeds; "
                         f"{k} of {len(nulls)} paired 95% CIs exclude 0 ({k / len(nulls):.0%}; "
                         f"about 5% is expected when the CIs hold their level)\n\n"
                         + _md(body, ["selector", "ratio", "seeds", "prompts", "difference",
                                      "95% CI", "excludes 0", "setting"]))
        else:
            lines.append(f"_Null control, {title}: no selector ran with two seeds._\n")
    return "\n".join(lines)


def corruption_section(data: StudyData) -> str:
    """On a pool with planted corruption: how many corrupted rows each selection took, per
    kind, next to the pool's share (what random takes on average)."""
    L = data.lengths
    if L.empty or "corrupted" not in L or L.corrupted.isna().all():
        return ""
    pools = L[(L.group == "pool") & L.corrupted.notna()]
    sel = L[L.selector.notna() & L.corrupted.notna()] if "selector" in L else L.iloc[:0]
    if sel.empty:
        return ""
    kinds = sorted({k for j in L.corrupted_kinds.dropna() for k in json.loads(j)})
    body = []
    for r in pools.itertuples():
        per = json.loads(r.corrupted_kinds)
        body.append(["(the whole pool)", "100%", "", int(r.n), f"{int(r.corrupted)} ({r.corrupted / r.n:.0%})",
                     *[per.get(k, 0) for k in kinds], ""])
    for r in sel.sort_values(["setting_fp", "ratio", "selector", "seed"]).itertuples():
        per = json.loads(r.corrupted_kinds)
        body.append([r.selector, f"{r.ratio:.0%}", int(r.seed), int(r.n),
                     f"{int(r.corrupted)} ({r.corrupted / max(r.n, 1):.0%})",
                     *[per.get(k, 0) for k in kinds], _tag(str(r.setting_fp))])
    return ("\n**Planted corruption in each selected subset** (rows; random takes the pool's "
            "share on average):\n\n"
            + _md(body, ["selector", "ratio", "seed", "selected", "corrupted", *kinds, "setting"]))


# --------------------------------------------------------------------------- MDE
def variance_of(cells: dict) -> Variance | None:
    return estimate_variance(cells, _pairs(cells))


def mde_section(data: StudyData, pilot: Variance | None = None) -> str:
    """MDE with the variance components this study measured (or the pilot's, or the prior),
    for PWS per judge group and for reference NLL."""
    p = pooled(data.results)
    if p.empty:
        return "_no results_\n"
    rows = []
    groups = dict(prompt_values(data))
    n_prompts = int(np.median(p.win + p.tie + p.lose)) if len(p) else 0
    seeds = int(p.groupby(["selector", "ratio", "setting_fp"]).seed.nunique().max())
    for title, cells in groups.items():
        est = variance_of(cells)
        var = est or pilot or PRIOR
        for label, n, k in [("this study", n_prompts, seeds), ("this study", n_prompts, 3),
                            ("paper scale", PAPER_PROMPTS, 1), ("paper scale", PAPER_PROMPTS, 3)]:
            row = [title, label, n, k, _fmt(mde(n, k, var), 3), var.source]
            if row not in rows:
                rows.append(row)
    nll = nll_values(data)
    if nll:
        est = variance_of(nll)
        n_ref = int(np.median([len(s) for seeds in nll.values() for s in seeds.values()]))
        if est:
            for k in sorted({1, seeds, 3}):
                rows.append(["reference NLL (nats/token)", "this study", n_ref, k,
                             _fmt(mde(n_ref, k, est), 4), est.source])
        else:
            rows.append(["reference NLL (nats/token)", "this study", n_ref, seeds, "?",
                         "needs a selector with two seeds and a second selector"])
    note = ("Minimum detectable difference between two selectors of one setting and ratio "
            "(two-sided, alpha 0.05, power 0.8): `MDE = (z_0.975 + z_0.8) sqrt(((1 - rho) + rho/k) "
            "sigma_d^2 / n + 2 tau_g^2 / k)` for n paired prompts and k seeds per selector "
            "(`selbench.leaderboard.stats.mde`, the same formula as `bench grid --dry-run`): "
            "sigma_d^2 is the per-prompt variance of the outcome difference of two selectors, rho "
            "its share that is re-drawn with each training seed, tau_g^2 a seed's global shift. "
            "The seed variance of a PWS already holds the prompt noise, which is not added twice. "
            "**A gap smaller than the MDE of its row is not evidence of a difference.**\n\n")
    return note + _md(rows, ["metric", "scale", "prompts n", "seeds k", "MDE", "variance from"])


# --------------------------------------------------------------------------- seeds, paired
def seeds_section(data: StudyData) -> str:
    out = []
    for title, cells in prompt_values(data).items():
        body = []
        for c in sorted(cells, key=lambda c: (c[0], c[1], c[2], c[3])):
            seeds = cells[c]
            pws = [1 + np.mean(list(v.values())) for v in seeds.values()]
            mean, lo, hi = cell_bootstrap(seeds)
            body.append([c[3], c[1], f"{c[2]:.0%}", len(seeds), ",".join(map(str, sorted(seeds))),
                         _fmt(mean), _fmt(float(np.std(pws, ddof=1)) if len(pws) > 1 else None),
                         f"[{_fmt(lo, 2)}, {_fmt(hi, 2)}]", len(set.union(*map(set, seeds.values()))),
                         _tag(str(c[0]))])
        out.append(f"**{title}**\n\n" + _md(body, ["selector", "regime", "ratio", "seeds n", "seeds",
                                                    "PWS", "sd over seeds", "95% CI", "prompts",
                                                    "setting"]))
    return ("CI: prompts resampled with each prompt's outcome averaged over the cell's seeds "
            "(the same kind for one seed or several; it stays inside [0, 2]).\n\n" + "\n".join(out))


def comparisons(data: StudyData) -> list[dict]:
    """Every paired comparison of two selectors in one setting, regime and ratio, per judge
    group and for reference NLL (positive difference = A better)."""
    out = []
    groups = dict(prompt_values(data))
    nll = nll_values(data)
    if nll:
        groups["reference NLL"] = {c: {s: {k: -v for k, v in d.items()} for s, d in seeds.items()}
                                   for c, seeds in nll.items()}
    for title, cells in groups.items():
        tau2 = seed_shift(null_comparisons(cells))
        for a, b in _pairs(cells):
            r = with_seed_noise(paired(cells[a], cells[b]), tau2, len(cells[a]), len(cells[b]))
            if r["n"]:
                out.append({"metric": title, "a": a, "b": b, "seeds_a": len(cells[a]),
                            "seeds_b": len(cells[b]), **r, "excludes0": _excludes0(r["ci95"])})
    return out


def paired_section(data: StudyData) -> str:
    comps = comparisons(data)
    if not comps:
        return "_no pair of selectors shares a setting and ratio_\n"
    out = []
    for metric in dict.fromkeys(c["metric"] for c in comps):
        unit = " (nats/token, positive = A's NLL lower)" if metric == "reference NLL" else ""
        body = [[f"{c['a'][2]:.0%}", c["a"][1], c["a"][3], c["b"][3], f"{c['seeds_a']}/{c['seeds_b']}",
                 c["n"], f"{c['diff']:+.3f}", f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]",
                 _fmt(c["p_a_better"], 2), "**yes**" if c["excludes0"] else "no", _tag(str(c["a"][0]))]
                for c in comps if c["metric"] == metric]
        out.append(f"**{metric}{unit}**\n\n" + _md(body, ["ratio", "regime", "A", "B", "seeds A/B",
                                                          "prompts", "A - B", "95% CI (paired, + seed noise)",
                                                          "P(A better)", "CI excludes 0", "setting"]))
    note = ("Both selectors of a row are judged against the same full-data model on the same "
            "prompts; the bootstrap resamples prompts (4,000 resamples, the same for A and B) with "
            "each prompt's value averaged over seeds. Where the study's null control measured a "
            "training-seed shift (tau > 0, see Controls) the CI adds it: diff +- 1.96 "
            "sqrt(se_prompts^2 + tau^2 (1/k_A + 1/k_B)) for k_A, k_B seeds. P(A better) = share of "
            "prompt resamples with A ahead. PWS differences are in PWS units.\n\n")
    return note + "\n".join(out)


def summary(data: StudyData) -> str:
    """The paragraph a reader needs first: does the study have power, and which differences
    are real (a paired CI that excludes 0) and which are not."""
    ctrl = controls(data)
    power = has_power(ctrl)
    comps = [c for c in comparisons(data) if not ({c["a"][3], c["b"][3]} & set(CONTROLS))]
    parts = []
    mixed = _mixed_power(ctrl)
    if mixed:
        pos = [f"{p['diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] ({t})"
               for t, g in ctrl.items() for p in g["positive"]]
        parts.append(mixed + " Oracle-clean minus oracle-corrupt: " + "; ".join(pos) + ".")
    elif power is False:
        pos = [f"{p['diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] ({t})"
               for t, g in ctrl.items() for p in g["positive"]]
        parts.append("**The positive control does not separate on any metric (oracle-clean minus "
                     "oracle-corrupt: " + "; ".join(pos) + "): this study cannot show that it "
                     "would see a planted difference in data quality at its scale, so no row "
                     "below is evidence that one selector gives a better model.**")
    elif power:
        pos = [f"{p['diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] ({t})"
               for t, g in ctrl.items() for p in g["positive"]]
        parts.append("The positive control separates (oracle-clean minus oracle-corrupt: "
                     + "; ".join(pos) + "), so the study can see a planted difference.")
    else:
        parts.append("No positive control ran, so the study cannot show it has power.")
    for t, g in ctrl.items():
        nulls = g["null"]
        if not nulls:
            continue
        k = sum(x["excludes0"] for x in nulls)
        line = f"Null control ({t}): {k} of {len(nulls)} seed-vs-seed prompt-only CIs exclude 0"
        if g.get("tau2") and k / len(nulls) > 0.2:
            line += (f", far above the 5% a calibrated CI gives: a training seed alone shifts this "
                     f"metric (sd {np.sqrt(g['tau2']):.2g}), so every comparison here adds that "
                     f"seed noise to its CI.")
        else:
            line += " (about 5% expected)."
        parts.append(line)
    real = [c for c in comps if c["excludes0"]]
    if comps:
        if real:
            head = ("Differences whose paired 95% CI excludes 0" if power else
                    "Differences whose paired 95% CI (seed noise included) excludes 0, real "
                    "differences of that metric but not shown to be differences in quality")
            parts.append(head + ": " + "; ".join(
                f"{c['a'][3]} vs {c['b'][3]} at {c['a'][2]:.0%} ({c['metric']}: {c['diff']:+.3f} "
                f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}])" for c in real) + ".")
        vs_random = [c for c in comps if "random" in (c["a"][3], c["b"][3])
                     and c["metric"] != "reference NLL"]
        if vs_random and not any(c["excludes0"] for c in vs_random):
            parts.append("**No selector separates from random at this scale** on the judged "
                         "outcome.")
        parts.append(f"All other {len(comps) - len(real)} of {len(comps)} selector comparisons "
                     f"are not distinguishable from noise.")
    js = data.judge_style
    if js is not None and not js.empty and "lc_length_coef" in js:
        for x in js.itertuples():
            if nan_safe(x.lc_length_coef) and nan_safe(x.lc_length_lo):
                sure = x.lc_length_lo > 0 or x.lc_length_hi < 0
                parts.append(f"Judge {x.judge}: fitted length slope {x.lc_length_coef:+.2f} "
                             f"[{x.lc_length_lo:+.2f}, {x.lc_length_hi:+.2f}]"
                             + (" (a length preference: compare PWS with LC-PWS below)." if sure
                                else " (no length preference detected)."))
    return " ".join(parts) + "\n"


# --------------------------------------------------------------------------- judges
def agreement_section(data: StudyData) -> str:
    p = data.prompts
    body = []
    if not p.empty:
        for (exp, a, b), g in p.groupby(["experiment", "model_a", "model_b"]):
            if g.judge.nunique() < 2:
                continue
            outs = {j: {(e, i): o for e, i, o in zip(x.eval_set, x.id, x.outcome)}
                    for j, x in g.groupby("judge")}
            for ag in judge_agreement(outs):
                body.append([g.selector.iloc[0], f"{g.ratio.iloc[0]:.0%}", g.seed.iloc[0],
                             ag["judge_a"], ag["judge_b"], ag["n"], _fmt(ag["agreement"], 2),
                             _fmt(ag["kappa"], 2), _tag(str(g.setting_fp.iloc[0]))])
    if not body:
        return ("_every comparison here has a single judge: no agreement to compute (run "
                "several judges, e.g. `judges: [gpt-5.1, qwen3-235b-instruct]`)_\n")
    return ("Per prompt W/T/L of two judges on the same comparison: share of prompts with the "
            "same outcome and Cohen's kappa (prompts both parsed).\n\n"
            + _md(body, ["selector", "ratio", "seed", "judge A", "judge B", "prompts",
                         "agreement", "kappa", "setting"]))


def consistency_section(data: StudyData) -> str:
    p = pooled(data.results)
    body = [[r.judge, r.selector, r.regime, f"{r.ratio:.0%}", r.seed, f"{r.win}/{r.tie}/{r.lose}",
             r.unparsed, _fmt(r.position_consistency, 2), _tag(str(r.setting_fp))]
            for r in p.itertuples()]
    return _md(body, ["judge", "selector", "regime", "ratio", "seed", "W/T/L", "unparsed",
                      "position consistency", "setting"])


def length_section(data: StudyData) -> str:
    p = pooled(data.results)
    body = [[r.judge, r.selector, r.regime, f"{r.ratio:.0%}", r.seed, _fmt(r.len_a, 1),
             _fmt(r.len_b, 1), _fmt(r.longer_won, 2), r.n_decided, _tag(str(r.setting_fp))]
            for r in p.itertuples()]
    tot = ""
    ok = p.dropna(subset=["longer_won"])
    for j, g in ok.groupby("judge"):
        w = (g.longer_won * g.n_decided).sum() / max(g.n_decided.sum(), 1)
        tot += f"- {j}: the longer answer won {w:.0%} of {int(g.n_decided.sum())} decided prompts\n"
    sel = ""
    L = data.lengths
    if not L.empty and "selector" in L:
        rows = []
        for r in L[L.selector.notna()].sort_values(["setting_fp", "ratio", "selector", "seed"]).itertuples():
            rows.append([r.selector, f"{r.ratio:.0%}", int(r.seed), int(r.n), _fmt(r.mean, 1),
                         _fmt(r.median, 0), f"{_fmt(r.p10, 0)}-{_fmt(r.p90, 0)}", _tag(str(r.setting_fp))])
        pools = L[L.group == "pool"]
        for r in pools.itertuples():
            rows.append(["(the whole pool)", "100%", "", int(r.n), _fmt(r.mean, 1), _fmt(r.median, 0),
                         f"{_fmt(r.p10, 0)}-{_fmt(r.p90, 0)}", ""])
        sel = ("\n**Response length of the selected training examples** (words):\n\n"
               + _md(rows, ["selector", "ratio", "seed", "examples", "mean", "median", "p10-p90",
                            "setting"]))
    return ("Mean answer length in words of the subset model (A) and the full-data model (B); "
            "'longer won' = share of decided prompts (win or lose, lengths differ) where the "
            "longer answer won: 0.5 is no length preference.\n\n"
            + _md(body, ["judge", "selector", "regime", "ratio", "seed", "words A", "words B (full)",
                         "longer won", "decided", "setting"]) + ("\n" + tot if tot else "") + sel)


def controlled_section(data: StudyData) -> str:
    """LC-PWS and style-PWS next to PWS for every result (per eval set and pooled), the three
    CIs from the same prompt resamples, and each judge's fitted preferences."""
    r = data.results
    if not has_controlled(r):
        return ("_no per-prompt judgments to fit (length / style control needs each prompt's "
                "outcome and both answers)_\n")
    sets = [s for s in dict.fromkeys(r.eval_set) if s != "pooled"]
    order = {s: i for i, s in enumerate(["pooled", *sets])}
    rows = r[r.lc_pws.notna()].assign(_o=r.eval_set.map(order)).sort_values(
        ["judge", "setting_fp", "regime", "ratio", "selector", "seed", "_o"])
    body = [[x.judge, x.selector, x.regime, f"{x.ratio:.0%}", x.seed, x.eval_set,
             f"{_fmt(x.pws)} [{_fmt(x.boot_pws_lo, 2)}, {_fmt(x.boot_pws_hi, 2)}]",
             f"{_fmt(x.lc_pws)} [{_fmt(x.lc_lo, 2)}, {_fmt(x.lc_hi, 2)}]",
             f"{_fmt(x.sc_pws)} [{_fmt(x.sc_lo, 2)}, {_fmt(x.sc_hi, 2)}]",
             _fmt(getattr(x, "len_a", None), 1), _fmt(getattr(x, "len_b", None), 1),
             _tag(str(x.setting_fp))] for x in rows.itertuples()]
    return ("What each subset model would score against the full-data model if its answers had "
            "the full-data model's length (LC-PWS, alpaca_eval's length-controlled GLM adapted to "
            "W/T/L from both orders) and also its markdown style (style-PWS, Arena-Hard-Auto's "
            "covariates). One fit per judge over all its comparisons; each comparison and eval set "
            "keeps its own intercept. CIs: 95% percentile over 1,000 prompt resamples, refitted; "
            "the PWS CI here is from the same resamples. A PWS gap that shrinks under LC-PWS was "
            "partly a length gap. Method and every departure from the released code: "
            "`selbench.leaderboard.lengthctl`.\n\n"
            + _md(body, ["judge", "selector", "regime", "ratio", "seed", "eval set", "PWS [CI]",
                         "LC-PWS [CI]", "style-PWS [CI]", "words A", "words B (full)", "setting"])
            + "\n" + judge_preferences_md(data.judge_style, _fmt))


# --------------------------------------------------------------------------- NLL, cost
def refnll_section(data: StudyData) -> str:
    """Reference NLL per cell: per judged eval set, pooled over exactly those sets
    (token-weighted), and the sets scored but not judged (koala) in their own columns."""
    r, p = data.refnll, pooled(data.results)
    if r.empty or p.empty:
        return "_no reference-NLL stage found_\n"
    judged = sorted(set(data.results.eval_set) - {"pooled"})
    others = sorted(set(r.eval_set) - set(judged))
    tot = r.groupby(["experiment", "train_key", "eval_set"])[["nll_sum", "tokens"]].sum()

    def nll(exp, tkey, sets):
        try:
            g = tot.loc[(exp, tkey)]
        except KeyError:
            return None
        g = g[g.index.isin(sets)]
        return float(g.nll_sum.sum() / g.tokens.sum()) if len(g) and g.tokens.sum() else None

    body = []
    for x in p.drop_duplicates(subset=["experiment", "model_a"]).sort_values(
            ["setting_fp", "regime", "ratio", "selector", "seed"]).itertuples():
        ta, tb = str(x.model_a).rsplit("-", 1)[0], str(x.model_b).rsplit("-", 1)[0]
        body.append([x.selector, x.regime, f"{x.ratio:.0%}", x.seed,
                     *[_fmt(nll(x.experiment, ta, [s]), 3) for s in judged],
                     _fmt(nll(x.experiment, ta, judged), 3),
                     *[_fmt(nll(x.experiment, ta, [s]), 3) for s in others],
                     _fmt(nll(x.experiment, tb, judged), 3), _tag(str(x.setting_fp))])
    head = ["selector", "regime", "ratio", "seed", *[f"NLL {s}" for s in judged],
            f"NLL pooled ({'+'.join(judged)})", *[f"NLL {s} (not judged)" for s in others],
            "full-data NLL (pooled)", "setting"]
    return ("Mean token NLL of each fine-tuned model on the gpt-3.5-turbo reference answers "
            "(DiverseEvol), prompt rendered with the generation template; token-weighted; lower "
            "is better. The pooled column covers exactly the judged eval sets of the tables; "
            "sets scored but not judged have their own columns. Judge-free: never mixed with "
            "PWS.\n\n" + _md(body, head))


def cost_section(data: StudyData) -> str:
    """Selection cost, the same way for every selector: its own work, the shared work it used
    (listed once below, charged once to the study), and the standalone total."""
    p = pooled(data.results).drop_duplicates(subset=["experiment", "model_a"])
    subs = {(s["experiment"], s["select_key"]): s for s in data.subsets.to_dict("records")} \
        if not data.subsets.empty else {}
    body = []
    for r in p.sort_values(["setting_fp", "regime", "ratio", "selector", "seed"]).itertuples():
        s = subs.get((r.experiment, _select_key(data, r)), {})
        shared = s.get("shared_keys") or []
        body.append([r.selector, r.regime, f"{r.ratio:.0%}", r.seed, r.n_selected,
                     _fmt(s.get("own_seconds"), 1), ", ".join(f"`{k.split('/')[-1][:24]}`" for k in shared) or "-",
                     _fmt(r.selection_seconds, 1), s.get("device") or r.selection_device or "",
                     fmt_flops(r.proxy_flops) if pd.notna(r.proxy_flops) and r.proxy_flops else "",
                     _fmt(r.train_seconds, 1), r.train_steps if pd.notna(r.train_steps) else "",
                     _tag(str(r.setting_fp))])
    sh = data.shared
    shared_md = ""
    if not sh.empty:
        rows = [[f"`{x.key.split('/')[-1][:40]}`", x.what, _fmt(x.seconds, 1),
                 fmt_flops(x.flops) if pd.notna(x.flops) and x.flops else "",
                 len(json.loads(x.used_by)) if isinstance(x.used_by, str) else 0] for x in sh.itertuples()]
        own = sum(v.get("own_seconds") or 0 for v in subs.values())
        total = own + float(sh.seconds.sum())
        shared_md = ("\n**Shared work** (built once, used by several selections; charged once):\n\n"
                     + _md(rows, ["key", "what", "seconds", "FLOPs (est.)", "selections using it"])
                     + f"\nSelection cost of the whole study: {own:.1f} s of own work + "
                       f"{float(sh.seconds.sum()):.1f} s of shared work = {total:.1f} s.\n")
    full = p.full_train_seconds.dropna()
    ft = f"\nFull-data model training: {full.iloc[0]:.1f} s (once per setting).\n" if len(full) else ""
    return ("Per selection: own seconds (this selection's work), the shared work it used (keys "
            "below), standalone seconds (own + shared: what it costs on its own), device and "
            "estimated proxy FLOPs; then the subset model's training.\n\n"
            + _md(body, ["selector", "regime", "ratio", "seed", "selected", "own s", "shared work",
                         "standalone s", "device", "proxy FLOPs (est.)", "train s", "train steps",
                         "setting"]) + shared_md + ft)


def _select_key(data: StudyData, r) -> str | None:
    if data.subsets.empty:
        return None
    m = data.subsets[(data.subsets.experiment == r.experiment) & (data.subsets.selector == r.selector)
                     & (data.subsets.ratio == r.ratio) & (data.subsets.seed == r.seed)
                     & (data.subsets.setting_fp == r.setting_fp)]
    return m.select_key.iloc[0] if len(m) else None


def skipped_section(data: StudyData) -> str:
    s = data.meta.get("skipped") or []
    if not s:
        return ""
    return ("\n## Skipped (damaged or unreadable files)\n\n"
            + "".join(f"- {x}\n" for x in sorted(set(s))))


def nan_safe(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))
