"""Study statistics: how sure is a PWS, and is a gap between two selectors real?

Per prompt the pairwise outcome is ``v in {+1 (win), 0 (tie), -1 (lose)}`` and
``PWS = 1 + mean(v)`` over the parsed prompts (unparsed ones are left out).

- :func:`mde`: minimum detectable PWS difference between two selectors of one setting and
  ratio, from the variance components of :class:`Variance` (paired prompts, k seeds each;
  the seed variance is not double counted), estimated by :func:`estimate_variance` from a
  study or taken from a pilot / the :data:`PRIOR`.
- :func:`cell_bootstrap`: one kind of CI for every cell (prompts resampled, per-prompt
  outcomes averaged over seeds).
- :func:`paired_bootstrap`: two selectors judged against the same full-data model on the
  same prompts: resample prompts (the same resample for both), CI of ``PWS_a - PWS_b`` and
  the share of resamples where a beats b.
- :func:`seed_summary`: mean, sample sd, n and a CI that uses the seed variance when n > 1
  (t interval over seeds), else the bootstrap CI of the single run.
- :func:`cohen_kappa`, :func:`judge_agreement`: two judges on the same prompts.
- :func:`length_bias`: among decided prompts, the share where the longer answer won.
- :func:`judge_noise_variance`, :func:`without_judge_noise`, :func:`judge_noise_mde`: the
  judge's own noise (the same answers judged twice) and how much of the MDE it makes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

VAL = {"win": 1, "tie": 0, "lose": -1}
PRIOR_S2 = 2.0 / 3.0
PRIOR_TAU = 0.05


def _z(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def outcome_variance(outcomes: Sequence[str]) -> float:
    v = np.array([VAL[o] for o in outcomes if o in VAL], dtype=float)
    return float(v.var(ddof=1)) if len(v) > 1 else float("nan")


@dataclass(frozen=True)
class Variance:
    """Variance components of a per-prompt outcome difference between two selectors' models
    judged on the same prompts against the same full-data model (the MDE model).

    With ``d_i = v_iA - v_iB`` for one seed of each selector (``v`` in {-1, 0, 1}):

    - ``diff`` = sigma_d^2, the variance over prompts of ``d_i``;
    - ``seed_share`` = rho, the part of sigma_d^2 that is seed-to-seed noise (re-drawn with
      every training seed: a prompt's outcome flips between seeds of the same selector); the
      rest, (1 - rho) sigma_d^2, is the selector x prompt interaction, the same for every
      seed;
    - ``shift`` = tau_g^2, the variance of a seed's global PWS shift (all prompts move
      together; a prompt bootstrap cannot see it).

    The difference of two cell means over k seeds each then has variance
    ``((1 - rho) + rho / k) sigma_d^2 / n + 2 tau_g^2 / k``. The seed variance of a PWS on
    fixed prompts is ``rho sigma_d^2 / (2 n) + tau_g^2``: it already holds the prompt-level
    noise, which is therefore never added a second time."""

    diff: float
    seed_share: float
    shift: float
    source: str = ""


# without pilot data: W, T and L equally likely for each model (per-prompt variance 2/3, so
# sigma_d^2 = 4/3 with no pairing gain), all of it seed noise, a 0.05 PWS seed shift
PRIOR = Variance(4.0 / 3.0, 1.0, 0.05 ** 2, "prior: W/T/L equally likely, no pairing gain, "
                                           "all per-prompt noise re-drawn per seed, seed shift sd 0.05")
PRIOR_S2 = 2.0 / 3.0
PRIOR_TAU = 0.05


def diff_se(n: int, k: int, var: Variance = PRIOR) -> float:
    if not n or n <= 0 or k <= 0:
        return float("nan")
    rho = min(1.0, max(0.0, var.seed_share))
    return math.sqrt(((1 - rho) + rho / k) * var.diff / n + 2.0 * var.shift / k)


def mde(n_prompts: int, n_seeds: int = 1, var: Variance = PRIOR, alpha: float = 0.05,
        power: float = 0.8) -> float:
    """Minimum detectable difference of two selectors' cell means (PWS units, or the units
    of ``var``): (z_{1-alpha/2} + z_power) x the standard error of :class:`Variance`. The
    one formula of the grid dry run, the study and the README."""
    return (_z(1 - alpha / 2) + _z(power)) * diff_se(n_prompts, n_seeds, var)


def mde_pws(n_prompts: int, n_seeds: int = 1, var: Variance | None = None, **kw) -> float:
    return mde(n_prompts, n_seeds, var or PRIOR, **kw)


def estimate_variance(cells: dict, pairs: list[tuple], min_prompts: int = 5) -> Variance | None:
    """Variance components from a study's per-prompt values.

    ``cells``: cell -> {seed: {prompt: value}} (one selector in one setting and ratio);
    ``pairs``: (cell_a, cell_b) of different selectors in the same setting and ratio.
    sigma_b^2 (per-prompt seed noise) and tau_g^2 come from cells with >= 2 seeds: the mean
    over prompts of the variance over seeds, and the variance over seeds of the mean minus
    its sigma_b^2 / n part; sigma_d^2 from the first seed of each pair. None when no cell has
    two seeds or no pair exists (the plan then uses :data:`PRIOR` and says so)."""
    sb, tg = [], []
    for seeds in cells.values():
        if len(seeds) < 2:
            continue
        keys = sorted(set.intersection(*[set(v) for v in seeds.values()]))
        if len(keys) < min_prompts:
            continue
        m = np.array([[seeds[s][k] for s in sorted(seeds)] for k in keys], float)
        b2 = float(m.var(axis=1, ddof=1).mean())
        sb.append(b2)
        tg.append(max(0.0, float(m.mean(axis=0).var(ddof=1)) - b2 / len(keys)))
    ds = []
    for a, b in pairs:
        sa, sb_ = cells.get(a) or {}, cells.get(b) or {}
        if not sa or not sb_:
            continue
        va, vb = sa[sorted(sa)[0]], sb_[sorted(sb_)[0]]
        keys = sorted(set(va) & set(vb))
        if len(keys) >= min_prompts:
            ds.append(float(np.var([va[k] - vb[k] for k in keys], ddof=1)))
    if not sb or not ds:
        return None
    d2 = float(np.mean(ds))
    b2 = float(np.mean(sb))
    return Variance(d2, min(1.0, 2 * b2 / d2) if d2 > 0 else 1.0, float(np.mean(tg)),
                    f"estimated: sigma_d^2 from {len(ds)} selector pair(s), seed noise from "
                    f"{len(sb)} cell(s) with several seeds")


def cell_bootstrap(per_seed: dict, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(PWS, CI low, CI high) of one cell: the per-prompt outcome averaged over the cell's
    seeds, prompts resampled. The same kind of CI for one seed or several; with values in
    [-1, 1] it never leaves PWS's [0, 2]."""
    keys = sorted(set.union(*[set(v) for v in per_seed.values()])) if per_seed else []
    if not keys:
        return float("nan"), float("nan"), float("nan")
    m = np.array([np.nanmean([per_seed[s].get(k, np.nan) for s in per_seed]) for k in keys])
    m = m[np.isfinite(m)]
    if not len(m):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = 1.0 + m[rng.integers(0, len(m), (n_boot, len(m)))].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return 1.0 + float(m.mean()), float(lo), float(hi)


def values(outcomes: Sequence[str]) -> np.ndarray:
    """+1/0/-1 per parsed prompt (unparsed dropped)."""
    return np.array([VAL[o] for o in outcomes if o in VAL], dtype=float)


def paired_bootstrap(a: dict, b: dict, n_boot: int = 4000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Paired bootstrap over prompts of PWS_a - PWS_b.

    ``a`` and ``b`` map a prompt key (e.g. (eval set, id)) to its outcome against the SAME
    full-data model; only prompts parsed in both are used. Returns the difference, its
    percentile CI, ``p_a_better`` (share of resamples with PWS_a > PWS_b; ties count half)
    and n."""
    keys = sorted(k for k in a if k in b and a[k] in VAL and b[k] in VAL)
    if not keys:
        return {"diff": float("nan"), "ci95": (float("nan"), float("nan")),
                "p_a_better": float("nan"), "n": 0}
    va = np.array([VAL[a[k]] for k in keys], dtype=float)
    vb = np.array([VAL[b[k]] for k in keys], dtype=float)
    d = va - vb
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    p = float(((boots > 0).sum() + 0.5 * (boots == 0).sum()) / n_boot)
    return {"diff": float(d.mean()), "ci95": (float(lo), float(hi)), "p_a_better": p, "n": len(d)}


def seed_summary(pws_per_seed: Sequence[float], single_ci: tuple[float, float] | None = None,
                 level: float = 0.95) -> dict:
    """Mean, sample sd and n over seeds; CI = t interval over seeds when n > 1 (it then
    reflects the seed variance), else the single run's bootstrap CI over prompts."""
    x = np.array([v for v in pws_per_seed if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0, "ci95": (float("nan"),) * 2}
    if n == 1:
        return {"mean": float(x[0]), "sd": float("nan"), "n": 1,
                "ci95": tuple(single_ci) if single_ci is not None else (float("nan"),) * 2}
    from scipy.stats import t

    m, sd = float(x.mean()), float(x.std(ddof=1))
    h = float(t.ppf(1 - (1 - level) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": m, "sd": sd, "n": n, "ci95": (m - h, m + h)}


def cohen_kappa(a: Sequence, b: Sequence, labels: Sequence | None = None) -> float:
    """Cohen's kappa of two raters on the same items: scikit-learn's ``cohen_kappa_score``
    (a thin wrapper: NaN for no items; 1.0 when both raters give every item the same single
    label, where scikit-learn's 0/0 is undefined)."""
    if len(a) != len(b):
        raise ValueError("kappa: both raters must rate the same items")
    if not len(a):
        return float("nan")
    if len(set(a) | set(b)) == 1:
        return 1.0
    from sklearn.metrics import cohen_kappa_score  # lazy: heavy

    return float(cohen_kappa_score(list(a), list(b),
                                   labels=list(labels) if labels is not None else None))


def judge_agreement(outcomes_by_judge: dict[str, dict]) -> list[dict]:
    """Every pair of judges on the prompts both parsed: share of prompts with the same W/T/L
    and Cohen's kappa on W/T/L."""
    out = []
    names = sorted(outcomes_by_judge)
    for i, j1 in enumerate(names):
        for j2 in names[i + 1:]:
            a, b = outcomes_by_judge[j1], outcomes_by_judge[j2]
            keys = sorted(k for k in a if k in b and a[k] in VAL and b[k] in VAL)
            x, y = [a[k] for k in keys], [b[k] for k in keys]
            out.append({"judge_a": j1, "judge_b": j2, "n": len(keys),
                        "agreement": float(np.mean([p == q for p, q in zip(x, y)])) if keys else float("nan"),
                        "kappa": cohen_kappa(x, y, ["win", "tie", "lose"]) if keys else float("nan")})
    return out


def length_bias(rows: Sequence[dict]) -> dict:
    """Rows with 'outcome' (for the subset model A) and 'len_a', 'len_b' (answer lengths).
    Among decided prompts (win/lose) whose answers differ in length: the share where the
    longer answer won. 0.5 = no length preference; a judge with a length bias sits far above."""
    dec = [r for r in rows if r.get("outcome") in ("win", "lose") and r["len_a"] != r["len_b"]]
    if not dec:
        return {"longer_won": float("nan"), "n_decided": 0}
    longer_won = sum((r["len_a"] > r["len_b"]) == (r["outcome"] == "win") for r in dec)
    return {"longer_won": longer_won / len(dec), "n_decided": len(dec)}


def words(text: str) -> int:
    """Answer length unit used everywhere in selbench's study tables: whitespace words."""
    return len((text or "").split())


# --------------------------------------------------------------------------- judge noise
def judge_noise_variance(first: dict, second: dict) -> dict:
    """Judge noise from judging the same answers twice (issue #20, section 4).

    ``first`` / ``second``: prompt key -> outcome (win/tie/lose/unparsed) of two judgings of
    the SAME two answers (same settings, or another sampling seed). Over the prompts parsed
    both times: ``flip_rate`` = share whose W/T/L differs, and ``var`` = sigma_J^2 =
    mean((v1 - v2)^2) / 2, the variance of one judging's outcome around the prompt's mean
    verdict (unbiased when the two judgings are independent draws of the same judge)."""
    keys = sorted(k for k in first if k in second and first[k] in VAL and second[k] in VAL)
    if not keys:
        return {"n": 0, "flip_rate": float("nan"), "var": float("nan")}
    v1 = np.array([VAL[first[k]] for k in keys], float)
    v2 = np.array([VAL[second[k]] for k in keys], float)
    return {"n": len(keys), "flip_rate": float(np.mean(v1 != v2)),
            "var": float(np.mean((v1 - v2) ** 2) / 2)}


def without_judge_noise(var: Variance, judge_var: float) -> Variance:
    """``var`` with the judge's own noise taken out: the MDE a noiseless judge would give.

    A judge's noise is re-drawn every time an answer is judged, so for the difference of two
    selectors (each judged separately) it is ``2 sigma_J^2`` of sigma_d^2, all of it in the
    part that is re-drawn with every seed (each seed's answers are judged anew)."""
    if not np.isfinite(judge_var) or judge_var <= 0:
        return var
    d = max(var.diff - 2 * judge_var, 1e-12)
    seed_part = max(var.seed_share * var.diff - 2 * judge_var, 0.0)
    return Variance(d, min(1.0, seed_part / d), var.shift,
                    f"{var.source}; judge noise 2 x {judge_var:.4f} removed")


def judge_noise_mde(n_prompts: int, n_seeds: int, var: Variance, judge_var: float,
                    **kw) -> dict:
    """How much judge noise adds to the MDE: the MDE from ``var`` (measured outcomes hold
    the judge's noise already), the MDE without it (:func:`without_judge_noise`), their
    difference, and the judge's share of sigma_d^2. A percentile bootstrap over prompts
    resamples judged outcomes, so its CI already includes judge noise in the same way."""
    full = mde(n_prompts, n_seeds, var, **kw)
    quiet = mde(n_prompts, n_seeds, without_judge_noise(var, judge_var), **kw)
    share = 2 * judge_var / var.diff if var.diff > 0 and np.isfinite(judge_var) else float("nan")
    return {"mde": full, "mde_without_judge_noise": quiet, "added": full - quiet,
            "judge_share": min(1.0, share) if np.isfinite(share) else share}
