"""Study statistics: how sure is a PWS, and is a gap between two selectors real?

Per prompt the pairwise outcome is ``v in {+1 (win), 0 (tie), -1 (lose)}`` and
``PWS = 1 + mean(v)`` over the parsed prompts (unparsed ones are left out).

- :func:`mde_pws`: minimum detectable PWS difference between two selectors of one cell,
  ``(z_{1-a/2} + z_{power}) * sqrt(2 * (s2 / n + tau2) / k)`` for ``n`` prompts, ``k``
  seeds per selector, per-prompt outcome variance ``s2`` and seed-to-seed variance ``tau2``
  of a PWS (two independent cell means; pairing over prompts only helps, so this is
  conservative). Defaults without pilot data: ``s2 = 2/3`` (W, T, L equally likely),
  ``tau2 = 0.05^2``.
- :func:`paired_bootstrap`: two selectors judged against the same full-data model on the
  same prompts: resample prompts (the same resample for both), CI of ``PWS_a - PWS_b`` and
  the share of resamples where a beats b.
- :func:`seed_summary`: mean, sample sd, n and a CI that uses the seed variance when n > 1
  (t interval over seeds), else the bootstrap CI of the single run.
- :func:`cohen_kappa`, :func:`judge_agreement`: two judges on the same prompts.
- :func:`length_bias`: among decided prompts, the share where the longer answer won.
"""
from __future__ import annotations

import math
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


def mde_pws(n_prompts: int, n_seeds: int = 1, s2: float | None = None, tau2: float | None = None,
            alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference of two cell means of PWS (two-sided test)."""
    if not n_prompts or n_prompts <= 0 or n_seeds <= 0:
        return float("nan")
    s2 = PRIOR_S2 if s2 is None or not np.isfinite(s2) else s2
    tau2 = PRIOR_TAU ** 2 if tau2 is None or not np.isfinite(tau2) else tau2
    se = math.sqrt(2.0 * (s2 / n_prompts + tau2) / n_seeds)
    return (_z(1 - alpha / 2) + _z(power)) * se


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
    """Cohen's kappa of two raters on the same items: (p_o - p_e) / (1 - p_e)."""
    if len(a) != len(b):
        raise ValueError("kappa: both raters must rate the same items")
    if not len(a):
        return float("nan")
    labels = list(labels) if labels is not None else sorted(set(a) | set(b))
    ix = {l: i for i, l in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b):
        m[ix[x], ix[y]] += 1
    n = m.sum()
    po = np.trace(m) / n
    pe = float((m.sum(0) * m.sum(1)).sum()) / n ** 2
    if pe == 1.0:
        return 1.0 if po == 1.0 else float("nan")
    return float((po - pe) / (1 - pe))


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
