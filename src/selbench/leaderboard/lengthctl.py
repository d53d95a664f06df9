"""Length- and style-controlled PWS: the score a subset model would get against the
full-data model if its answers had the full-data model's length (and markdown style).

Data: one row per (judge, comparison, eval set, prompt) with the judge's scores in both
orders (or the W/T/L outcome) and the two answers (A = subset model, B = full-data model),
or their precomputed features. Unparsed prompts are left out, as in PWS.

The model (one fit per judge, over every comparison that judge made)
--------------------------------------------------------------------
For prompt ``i`` of comparison ``c`` in eval set ``s``, the per-prompt outcome from both
orders (:func:`selbench.judges.pairwise.pairwise_outcome`) is coded
``y_i = (v_i + 1) / 2`` with ``v = +1 / 0 / -1`` for win / tie / lose, so ``y`` is 1, 1/2 or
0 and ``PWS = 2 * mean(y)``. ``y`` is fitted as a soft label of a logistic model
(quasi-binomial likelihood ``y log p + (1 - y) log(1 - p)``)::

    logit p_i = alpha[c, s] + sum_k beta_k * x_ik                     (beta: one per judge)

* **LC** (alpaca_eval's ``length_controlled_minimal`` GLM):
  ``x_i = tanh(D_i / sd(D))`` with ``D_i = len(A_i) - len(B_i)`` and ``sd`` the sample
  standard deviation (ddof 1) of ``D`` over all of the judge's rows (no centering, so
  ``x = 0`` means "same length"). ``beta > 0``: the judge prefers the longer answer.
* **Style** (Arena-Hard-Auto's style control): four covariates, each divided by its sample
  sd over the judge's rows (again not centered):
  length ``(L_A - L_B) / (L_A + L_B)``; and for headers, list items and bold spans, counted
  as Arena-Hard-Auto counts them (``#``-``######`` headings, ``1.``/``-``/``*``/``+`` list
  items, ``**x**``/``__x__`` spans, all after deleting fenced code blocks), the densities
  ``d = count / L`` compared as ``(d_A - d_B) / (d_A + d_B + 1)``.
  A covariate with no variation for a judge (e.g. no answer has any header) is dropped
  from that judge's fit and its coefficient reported as NaN.
* The controlled score is the prediction with every covariate at 0 (equal length, equal
  style): ``LC-PWS[c, s] = 2 * sigmoid(alpha[c, s])``; pooled over eval sets it is the
  prompt-weighted mean ``sum_s n[c,s] * LC-PWS[c,s] / sum_s n[c,s]``, just as the pooled
  PWS is the prompt-weighted mean of the per-set PWS.
* With ``beta = 0`` the fit reproduces PWS exactly: ``2 * sigmoid(alpha[c, s])`` is then the
  cell's ``2 * mean(y)``.
* Fit: Newton's method on the penalized log-likelihood with a ridge ``ridge / 2 * |theta|^2``
  (default 0.01) that only keeps a cell that wins (or loses) every prompt finite; the
  Hessian is an arrow matrix (diagonal in the cell intercepts), solved by its Schur
  complement, so a fit costs O(rows x covariates^2) per step.
* CI: percentile bootstrap (default 95 %, 1,000 resamples) over prompts, refitting every
  resample (warm-started). A resample draws, in each eval set, as many prompt ids as the
  set has, with replacement; the same draw applies to every comparison of the judge
  (paired: the comparisons share their prompts), so the CI includes the uncertainty of
  the judge's shared slope. The feature scales (sd) are kept from the full data. The same
  resamples give the PWS CI reported next to it (``pws_lo``/``pws_hi``).

Departures from alpaca_eval (``alpaca_eval.metrics.glm_winrate``, ``length_controlled_v1``)
------------------------------------------------------------------------------------------
1. Outcome: selbench's per-prompt W/T/L from both orders (tie = 1/2), not one annotation per
   instruction; alpaca_eval also codes a draw as 1/2 (its preference 1.5).
2. One length slope per judge shared by all comparisons (the issue's choice: a judge's
   taste for length is a property of the judge); alpaca_eval fits a separate GLM, slope
   included, per model. With one comparison and ``by_eval_set=False`` the two are the same
   model (checked in the tests against alpaca_eval's own code).
3. No ``instruction_difficulty`` term (it is precomputed by alpaca_eval on its 805
   instructions from many models' annotations; selbench's eval sets have no such table).
   With ``by_eval_set=True`` (default) the per-(comparison, eval set) intercepts play the
   role of a difficulty offset per eval set.
4. No regularization towards the "gamed" (verbose/concise-prompted) baseline models
   (that needs alpaca_eval's ``df_gamed.csv`` from the hub); i.e. the ``_minimal`` GLM.
5. Fit: near-unpenalized maximum likelihood (ridge 0.01) instead of L1-penalized
   ``LogisticRegressionCV`` (liblinear, 5-fold GroupKFold over C in 1e-4..1e4).
6. Length unit: whitespace words by default (the unit of every selbench study table);
   ``length_unit="chars"`` is alpaca_eval's (``str.len()``). Sign: ``D = A - B`` (model -
   baseline) where alpaca_eval uses ``len(output_1) - len(output_2)`` = baseline - model,
   so its coefficient has the opposite sign.
7. CI: a refitting bootstrap over prompts instead of alpaca_eval's standard error of the
   per-instruction predictions (which is 0 for the minimal GLM, whose prediction is
   constant).

Departures from Arena-Hard-Auto (``show_result.py --control-features length markdown``)
--------------------------------------------------------------------------------------
1. Outcome: per-prompt W/T/L as above, not one Bradley-Terry observation per game with
   "A>>B" counted three times (selbench's judge gives two scores, not a 5-way label).
2. Covariates divided by their sd but not centered, so that 0 is "same length and style as
   the full-data model" (Arena-Hard-Auto centers them, which predicts at the average style
   difference of the battles instead).
3. Length in whitespace words (or chars), not tiktoken gpt-4o tokens (no tokenizer file
   offline); one slope per judge as for LC; a 95 % percentile CI from 1,000 refits (it uses
   100 bootstraps and the 5 %/95 % quantiles).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from ..judges.pairwise import pairwise_outcome

OUTCOME_Y = {"win": 1.0, "tie": 0.5, "lose": 0.0}
STYLE_COVARIATES = ("length", "header", "list", "bold")
FEATURE_COLUMNS = ("len", "header", "list", "bold")  # <name>_a / <name>_b in the input

_CODE = re.compile(r"```[^`]*```")
_HEADER = re.compile(r"^#{1,6}\s", re.MULTILINE)
_ORDERED = re.compile(r"^\s*\d+\.\s", re.MULTILINE)
_UNORDERED = re.compile(r"^\s*[-*+]\s", re.MULTILINE)
_BOLD = (re.compile(r"\*\*[^*\n]+\*\*"), re.compile(r"__[^_\n]+__"))


# --------------------------------------------------------------------------- features
def answer_features(text: str | None, length_unit: str = "words") -> dict[str, int]:
    """Length and markdown counts of one answer: ``len`` (whitespace words, or characters
    with ``length_unit="chars"``), and after deleting fenced code blocks the number of
    headers (``#`` to ``######`` + space at a line start), list items (``1. ``, ``- ``,
    ``* ``, ``+ `` at a line start, indented or not) and bold spans (``**x**``, ``__x__``
    within a line), as Arena-Hard-Auto counts them."""
    text = text or ""
    if length_unit == "words":
        n = len(text.split())
    elif length_unit == "chars":
        n = len(text)
    else:
        raise ValueError(f"length_unit must be 'words' or 'chars', got {length_unit!r}")
    body = _CODE.sub("", text)
    return {"len": n, "header": len(_HEADER.findall(body)),
            "list": len(_ORDERED.findall(body)) + len(_UNORDERED.findall(body)),
            "bold": sum(len(p.findall(body)) for p in _BOLD)}


def comparison_rows(judge: str, comparison: str, judgments: Sequence[dict],
                    answers_a: dict[str, dict[str, str]], answers_b: dict[str, dict[str, str]],
                    length_unit: str = "words") -> list[dict]:
    """Input rows for :func:`controlled_pws` from one judged comparison: ``judgments`` are
    the per-prompt rows of its ``judgments.jsonl``; ``answers_*`` map eval set -> prompt id
    -> answer text (``leaderboard.study.answers_of``)."""
    out = []
    for j in judgments:
        es, pid = j["eval_set"], str(j["id"])
        fa = answer_features(answers_a.get(es, {}).get(pid, ""), length_unit)
        fb = answer_features(answers_b.get(es, {}).get(pid, ""), length_unit)
        out.append({"judge": judge, "comparison": comparison, "eval_set": es, "id": pid,
                    "outcome": j.get("outcome") or pairwise_outcome(j.get("scores_ab"), j.get("scores_ba")),
                    **{f"{k}_a": v for k, v in fa.items()}, **{f"{k}_b": v for k, v in fb.items()}})
    return out


def _prepare(rows: pd.DataFrame | Sequence[dict], length_unit: str) -> pd.DataFrame:
    df = pd.DataFrame(rows).copy() if not isinstance(rows, pd.DataFrame) else rows.copy()
    need = ("judge", "comparison", "eval_set", "id")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"controlled_pws: input lacks column(s) {', '.join(missing)}")
    if df.empty:
        return df
    if "outcome" not in df.columns:
        if not {"scores_ab", "scores_ba"} <= set(df.columns):
            raise ValueError("controlled_pws: give 'outcome' or 'scores_ab' and 'scores_ba'")
        df["outcome"] = [pairwise_outcome(a, b) for a, b in zip(df["scores_ab"], df["scores_ba"])]
    have = all(f"{k}_{s}" in df.columns for k in FEATURE_COLUMNS for s in "ab")
    if not have:
        if not {"answer_a", "answer_b"} <= set(df.columns):
            raise ValueError("controlled_pws: give 'answer_a' and 'answer_b' or the feature "
                             "columns " + ", ".join(f"{k}_a/{k}_b" for k in FEATURE_COLUMNS))
        for s in "ab":
            feats = [answer_features(t, length_unit) for t in df[f"answer_{s}"]]
            for k in FEATURE_COLUMNS:
                df[f"{k}_{s}"] = [f[k] for f in feats]
    df = df[df["outcome"].isin(list(OUTCOME_Y))].copy()
    df["y"] = df["outcome"].map(OUTCOME_Y).astype(float)
    df["id"] = df["id"].astype(str)
    return df.reset_index(drop=True)


def _scaled(raw: np.ndarray) -> tuple[np.ndarray, float]:
    """raw / sd(raw) (ddof 1, not centered); a covariate without variation gives NaN sd."""
    sd = float(np.std(raw, ddof=1)) if len(raw) > 1 else float("nan")
    if not np.isfinite(sd) or sd <= 1e-12:
        return np.zeros_like(raw), float("nan")
    return raw / sd, sd


def _rel(a: np.ndarray, b: np.ndarray, plus: float = 0.0) -> np.ndarray:
    den = a + b + plus
    return np.divide(a - b, den, out=np.zeros_like(a, dtype=float), where=den > 0)


def design(df: pd.DataFrame, model: str) -> tuple[np.ndarray, list[str], dict[str, float]]:
    """The covariates of one judge's rows: (X, names, sd of each raw covariate)."""
    la, lb = df["len_a"].to_numpy(float), df["len_b"].to_numpy(float)
    if model == "lc":
        z, sd = _scaled(la - lb)
        return (np.tanh(z)[:, None], ["length"], {"length": sd}) if np.isfinite(sd) else \
            (np.zeros((len(df), 0)), [], {"length": sd})
    if model != "style":
        raise ValueError(f"model must be 'lc' or 'style', got {model!r}")
    raws = {"length": _rel(la, lb)}
    for k in ("header", "list", "bold"):
        da = np.divide(df[f"{k}_a"].to_numpy(float), la, out=np.zeros(len(df)), where=la > 0)
        db = np.divide(df[f"{k}_b"].to_numpy(float), lb, out=np.zeros(len(df)), where=lb > 0)
        raws[k] = _rel(da, db, 1.0)
    cols, names, sds = [], [], {}
    for k, raw in raws.items():
        x, sd = _scaled(raw)
        sds[k] = sd
        if np.isfinite(sd):
            cols.append(x)
            names.append(k)
    X = np.column_stack(cols) if cols else np.zeros((len(df), 0))
    return X, names, sds


# --------------------------------------------------------------------------- fit
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def _mv(X: np.ndarray, b: np.ndarray) -> np.ndarray:
    """X @ b without BLAS: a multi-threaded BLAS on a busy machine makes these small
    products hundreds of times slower than a plain loop over the few columns."""
    out = np.zeros(X.shape[0])
    for j in range(X.shape[1]):
        out += X[:, j] * b[j]
    return out


def fit_glm(cell: np.ndarray, X: np.ndarray, y: np.ndarray, n_cells: int,
            weight: np.ndarray | None = None, ridge: float = 0.01,
            init: tuple[np.ndarray, np.ndarray] | None = None, max_iter: int = 100,
            tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Maximize ``sum_i w_i [y_i log p_i + (1-y_i) log(1-p_i)] - ridge/2 |theta|^2`` with
    ``logit p_i = alpha[cell_i] + X_i beta``; ``y`` may be fractional (soft labels).
    Returns (alpha, beta). Newton steps with the arrow-shaped Hessian solved through its
    Schur complement, halving a step that does not increase the objective; stops when no
    coefficient moves by more than ``tol``."""
    n, k = X.shape
    w = np.ones(n) if weight is None else np.asarray(weight, float)
    a = np.zeros(n_cells) if init is None else init[0].astype(float).copy()
    b = np.zeros(k) if init is None else init[1].astype(float).copy()
    wy = w * y

    def objective(eta, a_, b_):  # y log p + (1 - y) log(1 - p) = y eta - log(1 + e^eta)
        return float((wy * eta - w * np.logaddexp(0.0, eta)).sum()
                     - 0.5 * ridge * ((a_ * a_).sum() + (b_ * b_).sum()))

    eta = a[cell] + _mv(X, b)
    obj = objective(eta, a, b)
    for _ in range(max_iter):
        p = _sigmoid(eta)
        r = wy - w * p
        h = w * p * (1 - p)
        ga = np.bincount(cell, r, n_cells) - ridge * a
        D = np.bincount(cell, h, n_cells) + ridge
        if k:
            gb = np.einsum("ij,i->j", X, r) - ridge * b
            hX = h[:, None] * X
            B = np.column_stack([np.bincount(cell, hX[:, j], n_cells) for j in range(k)])
            S = np.einsum("ij,ik->jk", X, hX) + ridge * np.eye(k) - B.T @ (B / D[:, None])
            db = np.linalg.solve(S, gb - B.T @ (ga / D))
            da = (ga - B @ db) / D
        else:
            db = np.zeros(0)
            da = ga / D
        step = 1.0
        while True:
            na, nb = a + step * da, b + step * db
            neta = na[cell] + _mv(X, nb)
            new = objective(neta, na, nb)
            if new >= obj - 1e-12 * (1 + abs(obj)) or step < 1e-6:
                break
            step /= 2
        a, b, eta, obj = na, nb, neta, new
        if step * max(np.abs(da).max(initial=0), np.abs(db).max(initial=0)) < tol:
            break
    return a, b


# --------------------------------------------------------------------------- main
def _quantiles(x: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column (NaN resamples, e.g. a cell left empty, ignored)."""
    q = (1 - level) / 2
    if not np.isnan(x).any():
        lo, hi = np.quantile(x, [q, 1 - q], axis=0)
        return lo, hi
    return np.nanquantile(x, q, axis=0), np.nanquantile(x, 1 - q, axis=0)


def _judge_fit(df: pd.DataFrame, models: Sequence[str], by_eval_set: bool, n_boot: int,
               seed: int, level: float, ridge: float) -> tuple[list[dict], dict]:
    cells = (df["comparison"].astype(str) + "\x00" + (df["eval_set"].astype(str) if by_eval_set else ""))
    codes, uniq = pd.factorize(cells, sort=True)
    n_cells = len(uniq)
    y = df["y"].to_numpy(float)
    # what to report: every (comparison, eval set) and pooled per comparison
    groups: list[tuple[str, str, np.ndarray]] = []
    if by_eval_set:  # one intercept per comparison otherwise: only the pooled value exists
        for (comp, es), idx in df.groupby(["comparison", "eval_set"], sort=True).indices.items():
            groups.append((str(comp), str(es), np.asarray(idx)))
    for comp, idx in df.groupby("comparison", sort=True).indices.items():
        groups.append((str(comp), "pooled", np.asarray(idx)))

    # each row belongs to one per-set group (if reported) and to its comparison's pooled one
    member = [(g, idx) for g, (_, _, idx) in enumerate(groups)]
    g_rows = np.concatenate([idx for _, idx in member])
    g_code = np.concatenate([np.full(len(idx), g) for g, idx in member])

    def group_mean(v: np.ndarray, w: np.ndarray) -> np.ndarray:
        num = np.bincount(g_code, (w * v)[g_rows], len(groups))
        den = np.bincount(g_code, w[g_rows], len(groups))
        return np.divide(num, den, out=np.full(len(groups), np.nan), where=den > 0)

    def report(alpha: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Controlled PWS per reported group: prompt-weighted mean of 2 sigmoid(alpha)."""
        return group_mean(2 * _sigmoid(alpha)[codes], w)

    def raw_pws(w: np.ndarray) -> np.ndarray:
        return group_mean(2 * y, w)

    ones = np.ones(len(df))
    fits = {}
    for m in models:
        X, names, sds = design(df, m)
        a, b = fit_glm(codes, X, y, n_cells, ridge=ridge)
        fits[m] = {"X": X, "names": names, "sd": sds, "alpha": a, "beta": b,
                   "point": report(a, ones), "boot": [], "boot_beta": []}
    pws_point = raw_pws(ones)
    pws_boot = []
    # paired bootstrap over prompts: resample prompt ids within each eval set
    rng = np.random.default_rng(seed)
    keys = pd.factorize(df["eval_set"].astype(str) + "\x00" + df["id"].astype(str), sort=True)
    key_code, key_uniq = keys
    key_set = np.array([k.split("\x00")[0] for k in key_uniq])
    by_set = [np.flatnonzero(key_set == s) for s in sorted(set(key_set))]
    for _ in range(n_boot):
        cnt = np.zeros(len(key_uniq))
        for ids in by_set:
            np.add.at(cnt, rng.choice(ids, size=len(ids), replace=True), 1.0)
        w = cnt[key_code]
        pws_boot.append(raw_pws(w))
        for m in models:
            f = fits[m]
            a, b = fit_glm(codes, f["X"], y, n_cells, weight=w, ridge=ridge,
                           init=(f["alpha"], f["beta"]))
            f["boot"].append(report(a, w))
            f["boot_beta"].append(b)
    rows = []
    plo, phi = _quantiles(np.array(pws_boot), level) if n_boot else (pws_point * np.nan,) * 2
    cis = {m: _quantiles(np.array(fits[m]["boot"]), level) if n_boot else (fits[m]["point"] * np.nan,) * 2
           for m in models}
    for g, (comp, es, idx) in enumerate(groups):
        sub = df.iloc[idx]
        r = {"comparison": comp, "eval_set": es, "n": len(idx),
             "win": int((sub["outcome"] == "win").sum()), "tie": int((sub["outcome"] == "tie").sum()),
             "lose": int((sub["outcome"] == "lose").sum()),
             "pws": pws_point[g], "pws_lo": plo[g], "pws_hi": phi[g],
             "mean_len_a": float(sub["len_a"].mean()), "mean_len_b": float(sub["len_b"].mean())}
        for m in models:
            f = fits[m]
            pre = "lc" if m == "lc" else "sc"
            lo, hi = cis[m]
            r.update({f"{pre}_pws": f["point"][g], f"{pre}_lo": lo[g], f"{pre}_hi": hi[g]})
        rows.append(r)
    coefs: dict = {"n": len(df), "n_comparisons": int(df["comparison"].nunique()), "n_cells": n_cells}
    for m in models:
        f = fits[m]
        pre = "lc" if m == "lc" else "sc"
        bb = np.array(f["boot_beta"]) if n_boot else np.zeros((0, len(f["names"])))
        covs = ("length",) if m == "lc" else STYLE_COVARIATES
        for cname in covs:
            coefs[f"{pre}_{cname}_sd"] = f["sd"].get(cname, float("nan"))
            if cname in f["names"]:
                j = f["names"].index(cname)
                coefs[f"{pre}_{cname}_coef"] = float(f["beta"][j])
                lo, hi = _quantiles(bb[:, j:j + 1], level) if len(bb) else ([np.nan], [np.nan])
                coefs[f"{pre}_{cname}_lo"], coefs[f"{pre}_{cname}_hi"] = float(lo[0]), float(hi[0])
            else:
                coefs[f"{pre}_{cname}_coef"] = coefs[f"{pre}_{cname}_lo"] = coefs[f"{pre}_{cname}_hi"] = float("nan")
    return rows, coefs


def controlled_pws(rows: pd.DataFrame | Sequence[dict], models: Sequence[str] = ("lc", "style"),
                   by_eval_set: bool = True, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95, length_unit: str = "words",
                   ridge: float = 0.01) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Length- (``lc``) and style-controlled (``style``) PWS, fitted per judge.

    ``rows``: one per (judge, comparison, eval set, prompt) with columns ``judge``,
    ``comparison`` (any id of the subset-vs-full comparison, e.g. the judge result folder),
    ``eval_set``, ``id``; ``outcome`` (win/tie/lose/unparsed) or ``scores_ab`` +
    ``scores_ba``; and ``answer_a`` + ``answer_b`` (texts) or the features ``len_a``,
    ``len_b``, ``header_a``, ``header_b``, ``list_a``, ``list_b``, ``bold_a``, ``bold_b``
    (:func:`answer_features`). Unparsed prompts are dropped.

    Returns ``(table, judges)``:

    - ``table``: per judge, comparison and eval set (and ``eval_set == "pooled"`` per
      comparison): ``n``, ``win``/``tie``/``lose``, ``pws`` with ``pws_lo``/``pws_hi`` (its
      CI from the same resamples), ``lc_pws``/``lc_lo``/``lc_hi``,
      ``sc_pws``/``sc_lo``/``sc_hi`` (style), ``mean_len_a``/``mean_len_b``;
    - ``judges``: per judge ``n``, ``n_comparisons``, ``lc_length_coef`` (+ ``_lo``/``_hi``,
      ``_sd``: the length scale), and ``sc_<covariate>_coef`` (+ CI, sd) for the style
      covariates length, header, list, bold.
    """
    df = _prepare(rows, length_unit)
    tables, judges = [], []
    if df.empty:
        return pd.DataFrame(), pd.DataFrame()
    for judge, sub in df.groupby("judge", sort=True):
        sub = sub.reset_index(drop=True)
        rws, coefs = _judge_fit(sub, list(models), by_eval_set, n_boot, seed, level, ridge)
        tables += [{"judge": judge, **r} for r in rws]
        judges.append({"judge": judge, **coefs})
    return pd.DataFrame(tables), pd.DataFrame(judges)
