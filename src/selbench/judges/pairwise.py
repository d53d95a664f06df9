"""The pairwise protocol: both display orders per prompt, W/T/L, PWS, statistics.

For model A against model B on one prompt, the judge sees (A, B) and (B, A).
``scores_ab`` are the two scores in display order when A is first (A's score is [0]);
``scores_ba`` the two in display order when B is first (A's score is [1]).
A *wins* if it scores higher in both orders, or higher in one and equal in the other;
*loses* symmetrically; every other combination is a *tie*. If either order could not be
parsed the prompt is *unparsed*: reported separately and left out of PWS.

    PWS = 1 + (W - L) / (W + T + L)      (2 = always wins, 1 = even, 0 = always loses)

Two PWS variants are reported, each labelled:
- ``pws`` (selbench's): unparsed prompts are counted and left out of W/T/L;
- ``pws_compat`` (Cherry/Superfiltering-compatible): an order whose completion cannot be
  parsed counts as equal scores in that order (their scripts score a failed parse as
  [-1, -1]), so every prompt gets W, T or L and none is left out.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

Outcome = str  # 'win' | 'tie' | 'lose' | 'unparsed'


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def pairwise_outcome(scores_ab: Sequence[float] | None,
                     scores_ba: Sequence[float] | None) -> Outcome:
    if scores_ab is None or scores_ba is None:
        return "unparsed"
    first = _sign(scores_ab[0] - scores_ab[1])  # A shown first
    second = _sign(scores_ba[1] - scores_ba[0])  # A shown second
    if (first, second) in ((1, 1), (1, 0), (0, 1)):
        return "win"
    if (first, second) in ((-1, -1), (-1, 0), (0, -1)):
        return "lose"
    return "tie"


def pairwise_outcome_compat(scores_ab: Sequence[float] | None,
                            scores_ba: Sequence[float] | None) -> Outcome:
    """The Cherry/Superfiltering-compatible outcome: an unparsed order counts as a tie."""
    return pairwise_outcome(scores_ab or (0.0, 0.0), scores_ba or (0.0, 0.0))


def order_verdict(scores: Sequence[float] | None, a_first: bool) -> int | None:
    """+1 if A is preferred in this order, -1 if B, 0 for equal scores."""
    if scores is None:
        return None
    a, b = (scores[0], scores[1]) if a_first else (scores[1], scores[0])
    return _sign(a - b)


def pws(w: int, t: int, l: int) -> float:
    n = w + t + l
    return float("nan") if n == 0 else 1.0 + (w - l) / n


def summarize(outcomes: Iterable[Outcome]) -> dict:
    c = Counter(outcomes)
    w, t, l, u = c["win"], c["tie"], c["lose"], c["unparsed"]
    return {"win": w, "tie": t, "lose": l, "unparsed": u, "n": w + t + l + u, "pws": pws(w, t, l)}


def position_consistency(pairs: Iterable[tuple[Sequence[float] | None, Sequence[float] | None]]) -> float:
    """Share of (parsed) prompts whose two orders prefer the same model (or both tie)."""
    agree = total = 0
    for ab, ba in pairs:
        v1, v2 = order_verdict(ab, True), order_verdict(ba, False)
        if v1 is None or v2 is None:
            continue
        total += 1
        agree += v1 == v2
    return float("nan") if total == 0 else agree / total


def bootstrap_pws(outcomes: Sequence[Outcome], n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of PWS, resampling prompts (unparsed ones dropped)."""
    vals = np.array([{"win": 1, "tie": 0, "lose": -1}[o] for o in outcomes if o != "unparsed"])
    if len(vals) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(vals), size=(n_boot, len(vals)))
    stats = 1.0 + vals[idx].mean(axis=1)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def summarize_rows(rows: list[dict], seed: int = 0) -> dict:
    """W/T/L, PWS, bootstrap CI and position consistency per eval set and pooled, from
    per-prompt rows with 'eval_set', 'outcome', 'scores_ab', 'scores_ba'."""
    summary = {}
    sets = sorted({r["eval_set"] for r in rows})
    for name, subset in [(s, [r for r in rows if r["eval_set"] == s]) for s in sets] + [("pooled", rows)]:
        outs = [r["outcome"] for r in subset]
        s = summarize(outs)
        s["ci95"] = bootstrap_pws(outs, seed=seed)
        s["position_consistency"] = position_consistency(
            (r.get("scores_ab"), r.get("scores_ba")) for r in subset)
        compat = summarize(pairwise_outcome_compat(r.get("scores_ab"), r.get("scores_ba"))
                           for r in subset)
        s["compat"] = {k: compat[k] for k in ("win", "tie", "lose", "pws")}
        s["pws_compat"] = compat["pws"]
        summary[name] = s
    return summary
