"""Length- and style-controlled PWS joined to the results table, so that every table that
shows a PWS can show LC-PWS and style-PWS next to it (issue #20).

One fit per judge over every comparison that judge made (:mod:`.lengthctl`): the judge's
length (and markdown style) slopes are shared by its comparisons, each comparison and eval
set keeps its own intercept. A comparison is one judge result folder (subset model vs the
full-data model of one setting, one seed). The columns added to a results row
(judge x comparison x eval set, ``pooled`` included):

- ``lc_pws``, ``lc_lo``, ``lc_hi``: length-controlled PWS and its 95 % percentile CI (1,000
  prompt resamples, refitted);
- ``sc_pws``, ``sc_lo``, ``sc_hi``: style-controlled (length, headers, lists, bold);
- ``boot_pws_lo``, ``boot_pws_hi``: the plain PWS's CI from the same resamples, so the
  three intervals are comparable.

Rows without per-prompt judgments (an external result that shipped only a summary) get
NaN, shown blank, never a guess. The judges' fitted preferences come back as their own
table (:func:`judge_preferences_md`).
"""
from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from .lengthctl import FEATURE_COLUMNS, controlled_pws

COLUMNS = ("lc_pws", "lc_lo", "lc_hi", "sc_pws", "sc_lo", "sc_hi", "boot_pws_lo", "boot_pws_hi")
# prompts.csv of studies published before the style covariates were named as in lengthctl
_LEGACY = {"words": "len", "headers": "header", "list_items": "list"}


def lengthctl_rows(prompts: pd.DataFrame) -> pd.DataFrame:
    """The per-prompt rows of a study (``StudyData.prompts``) as :func:`.lengthctl.controlled_pws`
    input: one comparison per judge result folder."""
    if prompts is None or prompts.empty:
        return pd.DataFrame()
    p = prompts.rename(columns={f"{o}_{s}": f"{n}_{s}" for o, n in _LEGACY.items() for s in "ab"})
    need = [f"{k}_{s}" for k in FEATURE_COLUMNS for s in "ab"]
    if any(c not in p for c in need) or "result_dir" not in p:
        return pd.DataFrame()
    out = p[["judge", "result_dir", "eval_set", "id", "outcome", *need]].rename(
        columns={"result_dir": "comparison"})
    return out[out.comparison.notna()]


def add_controlled(results: pd.DataFrame, prompts: pd.DataFrame, n_boot: int = 1000,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``results`` with the :data:`COLUMNS` joined on (judge, result folder, eval set), and
    the per-judge coefficient table of :func:`.lengthctl.controlled_pws`."""
    res = results.copy()
    for c in COLUMNS:
        res[c] = float("nan")
    rows = lengthctl_rows(prompts)
    if res.empty or rows.empty or "result_dir" not in res:
        return res, pd.DataFrame()
    table, judges = controlled_pws(rows, models=("lc", "style"), by_eval_set=True,
                                   n_boot=n_boot, seed=seed)
    if table.empty:
        return res, judges
    t = table.rename(columns={"comparison": "result_dir", "pws_lo": "boot_pws_lo",
                              "pws_hi": "boot_pws_hi"})
    t = t[["judge", "result_dir", "eval_set", *COLUMNS]]
    res = res.drop(columns=list(COLUMNS)).merge(t, on=["judge", "result_dir", "eval_set"], how="left")
    return res, judges


def has_controlled(df: pd.DataFrame) -> bool:
    return "lc_pws" in df and df["lc_pws"].notna().any()


def judge_preferences_md(judges: pd.DataFrame, fmt) -> str:
    """Each judge's fitted length and style preferences (logit slope per sd of the
    covariate, with its 95 % CI): > 0 = the judge favours the longer / more-markdown answer."""
    if judges is None or judges.empty:
        return ""

    def ci(r, pre, name):
        c = r.get(f"{pre}_{name}_coef")
        if c is None or pd.isna(c):
            return "n/a (no variation)"
        return f"{fmt(c, 2)} [{fmt(r.get(f'{pre}_{name}_lo'), 2)}, {fmt(r.get(f'{pre}_{name}_hi'), 2)}]"
    body = []
    for r in judges.to_dict("records"):
        body.append([r["judge"], int(r.get("n", 0)), int(r.get("n_comparisons", 0)),
                     ci(r, "lc", "length"), fmt(r.get("lc_length_sd"), 1),
                     *[ci(r, "sc", k) for k in ("length", "header", "list", "bold")]])
    return ("Fitted preferences of each judge, over every comparison it made (logit slope per "
            "sd of the covariate, 95% CI from the same 1,000 refits; > 0 = favours the subset "
            "model's answer when it is longer / has more headers, list items, bold). LC: "
            "tanh(length difference / sd), sd in words; style: relative length and markdown "
            "densities (Arena-Hard-Auto's covariates).\n\n"
            + tabulate(body, headers=["judge", "prompts", "comparisons", "LC length slope",
                                      "length sd (words)", "style: length", "style: headers",
                                      "style: lists", "style: bold"],
                       tablefmt="github", disable_numparse=True) + "\n")
