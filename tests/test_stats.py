"""Study statistics against numpy/scipy/sklearn on known cases."""
import math

import numpy as np
import pytest
from scipy import stats as st

from selbench.leaderboard.stats import (PRIOR, Variance, cell_bootstrap, cohen_kappa,
                                        estimate_variance, judge_agreement, length_bias, mde,
                                        mde_pws, outcome_variance, paired_bootstrap, seed_summary)


def test_mde_formula():
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    v = Variance(diff=0.8, seed_share=0.5, shift=0.001)
    # ((1 - rho) + rho / k) sigma_d^2 / n + 2 tau^2 / k, computed by hand
    assert mde(100, 2, v) == pytest.approx(z * math.sqrt((0.5 + 0.25) * 0.8 / 100 + 2 * 0.001 / 2))
    # more seeds shrink only the seed parts; a pure interaction does not shrink
    assert mde(100, 4, Variance(0.8, 0.0, 0.0)) == pytest.approx(mde(100, 1, Variance(0.8, 0.0, 0.0)))
    assert mde(100, 4, Variance(0.8, 1.0, 0.0)) == pytest.approx(mde(100, 1, Variance(0.8, 1.0, 0.0)) / 2)
    assert math.isnan(mde(0, 1)) and mde_pws(298, 1) == mde(298, 1, PRIOR)
    # the prior at paper scale (298 prompts): one seed 0.27, three seeds 0.16
    assert mde(298, 1) == pytest.approx(0.2727, abs=1e-3) and mde(298, 3) == pytest.approx(0.1574, abs=1e-3)


def _simulate(rng, n_prompts, n_seeds, shift_sd, p_flip, quality=0.0, base=None):
    """Per-prompt outcomes of one selector's seeds: each prompt has a fixed outcome for the
    selector (its interaction with the prompt), a seed flips it to a fresh draw with
    probability p_flip, and a seed shifts every prompt by a global amount (rounded)."""
    base = rng.choice([-1.0, 0.0, 1.0], n_prompts) if base is None else base
    seeds = {}
    for s in range(n_seeds):
        v = base.copy()
        flip = rng.random(n_prompts) < p_flip
        v[flip] = rng.choice([-1.0, 0.0, 1.0], flip.sum())
        bump = rng.random(n_prompts) < abs(quality + rng.normal(0, shift_sd))
        v[bump] = np.clip(v[bump] + np.sign(quality or 1), -1, 1)
        seeds[s] = {("s", str(i)): float(x) for i, x in enumerate(v)}
    return seeds


def test_null_control_false_positive_rate_is_about_the_stated_level():
    """Issue 18: two seeds of the same selector (no real difference): over many simulated
    null comparisons, the study's paired 95% CIs exclude 0 about 5% of the time."""
    from selbench.leaderboard.report import paired

    rng = np.random.default_rng(0)
    hits = 0
    trials = 300
    for _ in range(trials):
        seeds = _simulate(rng, 120, 2, 0.0, 0.5)
        r = paired({0: seeds[0]}, {1: seeds[1]}, n_boot=1000, seed=int(rng.integers(1e9)))
        hits += r["ci95"][0] > 0 or r["ci95"][1] < 0
    rate = hits / trials
    assert 0.02 <= rate <= 0.09, rate  # binomial(300, 0.05): 95% of runs fall in [0.027, 0.077]


def test_a_planted_difference_is_detected_at_the_planned_mde():
    """The positive-control logic: a difference of about twice the MDE separates."""
    from selbench.leaderboard.report import paired

    rng = np.random.default_rng(1)
    base = rng.choice([-1.0, 0.0, 1.0], 200)
    good = _simulate(rng, 200, 2, 0.0, 0.3, quality=0.5, base=base)
    bad = _simulate(rng, 200, 2, 0.0, 0.3, quality=-0.5, base=base)
    r = paired(good, bad, n_boot=2000)
    assert r["ci95"][0] > 0


def test_variance_components_are_recovered_from_seeds():
    """estimate_variance finds the seed noise it is given in a simulation: pure seed noise
    (every prompt re-drawn per seed) gives seed_share ~ 1 and almost no global shift."""
    rng = np.random.default_rng(2)
    cells = {("s", "lora", 0.05, "a", "fa"): _simulate(rng, 400, 3, 0.0, 1.0),
             ("s", "lora", 0.05, "b", "fb"): _simulate(rng, 400, 3, 0.0, 1.0)}
    pairs = [(("s", "lora", 0.05, "a", "fa"), ("s", "lora", 0.05, "b", "fb"))]
    var = estimate_variance(cells, pairs)
    # fresh draws: per-prompt variance of one outcome 2/3, of a difference 4/3
    assert var.diff == pytest.approx(4 / 3, rel=0.15)
    assert var.seed_share == pytest.approx(1.0, abs=0.15) and var.shift < 0.003
    # with seeds that never flip, all of the difference is the interaction
    fixed = {k: _simulate(rng, 400, 3, 0.0, 0.0) for k in cells}
    var0 = estimate_variance(fixed, pairs)
    assert var0.seed_share == pytest.approx(0.0, abs=1e-9)


def test_cell_bootstrap_stays_in_range_and_is_one_kind_for_any_seeds():
    seeds = {0: {("s", str(i)): 1.0 for i in range(10)}, 1: {("s", str(i)): -1.0 for i in range(10)}}
    m, lo, hi = cell_bootstrap(seeds)
    assert m == pytest.approx(1.0) and 0 <= lo <= m <= hi <= 2
    one = {0: {("s", str(i)): float(x) for i, x in enumerate([1, 1, 1, -1, 0, 0, 1, -1, 1, 1])}}
    m1, lo1, hi1 = cell_bootstrap(one)
    assert m1 == pytest.approx(1.4) and 0 <= lo1 < m1 < hi1 <= 2


def test_outcome_variance_matches_numpy():
    outs = ["win"] * 5 + ["tie"] * 3 + ["lose"] * 2 + ["unparsed"]
    v = np.array([1] * 5 + [0] * 3 + [-1] * 2)
    assert outcome_variance(outs) == pytest.approx(v.var(ddof=1))


def test_paired_bootstrap_known_cases():
    a = {i: "win" for i in range(30)}
    b = {i: "lose" for i in range(30)}
    r = paired_bootstrap(a, b, n_boot=500)
    assert r["diff"] == 2.0 and r["ci95"] == (2.0, 2.0) and r["p_a_better"] == 1.0 and r["n"] == 30
    same = paired_bootstrap(a, a, n_boot=500)
    assert same["diff"] == 0 and same["p_a_better"] == 0.5
    # random case: CI close to the normal approximation of the paired mean difference
    rng = np.random.default_rng(1)
    labs = np.array(["win", "tie", "lose"])
    xa = rng.choice(labs, 400, p=[0.5, 0.2, 0.3])
    xb = rng.choice(labs, 400, p=[0.3, 0.2, 0.5])
    a = dict(enumerate(xa))
    b = dict(enumerate(xb))
    b[399] = "unparsed"  # dropped from both
    r = paired_bootstrap(a, b, n_boot=4000, seed=0)
    val = {"win": 1, "tie": 0, "lose": -1}
    d = np.array([val[a[k]] - val[b[k]] for k in range(399)])
    assert r["n"] == 399 and r["diff"] == pytest.approx(d.mean())
    half = st.norm.ppf(0.975) * d.std(ddof=1) / math.sqrt(len(d))
    assert r["ci95"][0] == pytest.approx(d.mean() - half, abs=0.03)
    assert r["ci95"][1] == pytest.approx(d.mean() + half, abs=0.03)
    assert r["p_a_better"] > 0.99


def test_seed_summary_uses_seed_variance_when_several_seeds():
    x = [0.925, 0.900]
    s = seed_summary(x, (0.7, 1.1))
    lo, hi = st.t.interval(0.95, 1, loc=np.mean(x), scale=st.sem(x))
    assert s["n"] == 2 and s["sd"] == pytest.approx(np.std(x, ddof=1))
    assert s["ci95"][0] == pytest.approx(lo) and s["ci95"][1] == pytest.approx(hi)
    one = seed_summary([0.9], (0.7, 1.1))
    assert one["n"] == 1 and one["ci95"] == (0.7, 1.1) and math.isnan(one["sd"])


def test_cohen_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    labs = ["win", "tie", "lose"]
    a = list(rng.choice(labs, 200))
    b = [x if rng.random() < 0.6 else rng.choice(labs) for x in a]
    assert cohen_kappa(a, b, labs) == pytest.approx(cohen_kappa_score(a, b, labels=labs))
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    ag = judge_agreement({"j1": dict(enumerate(a)), "j2": dict(enumerate(b))})
    assert ag[0]["n"] == 200 and ag[0]["agreement"] == pytest.approx(np.mean(np.array(a) == np.array(b)))


def test_length_bias():
    rows = [{"outcome": "win", "len_a": 10, "len_b": 5},   # longer won
            {"outcome": "lose", "len_a": 10, "len_b": 5},  # shorter won
            {"outcome": "lose", "len_a": 3, "len_b": 5},   # longer won
            {"outcome": "tie", "len_a": 3, "len_b": 5},    # not decided
            {"outcome": "win", "len_a": 5, "len_b": 5}]    # same length
    assert length_bias(rows) == {"longer_won": 2 / 3, "n_decided": 3}


def test_a_control_that_separates_on_one_metric_only_is_reported_per_metric(monkeypatch):
    """Reference NLL separates the oracles, the judge does not: the summary and the controls
    section say both, not a blanket 'has power' or 'no power'."""
    import pandas as pd

    from selbench.leaderboard import report
    from selbench.leaderboard.data import StudyData

    def pos(diff, lo, hi):
        return {"setting_fp": "exp:s", "regime": "lora", "ratio": 0.1, "n": 100, "diff": diff,
                "ci95": (lo, hi), "separates": lo > 0}
    ctrl = {"judge J (offline, not an LLM)": {"null": [], "positive": [pos(0.04, -0.1, 0.18)]},
            "reference NLL (lower is better)": {"null": [], "positive": [pos(0.2, 0.1, 0.3)]}}
    monkeypatch.setattr(report, "controls", lambda data: ctrl)
    monkeypatch.setattr(report, "comparisons", lambda data: [])
    data = StudyData(results=pd.DataFrame())
    s = report.summary(data)
    assert "separates on reference NLL (lower is better)" in s
    assert "**not on judge J (offline, not an LLM)**" in s and "no power at its scale" not in s
    assert "separates on reference NLL" in report.controls_section(data).splitlines()[0]
    assert report.power_by_metric(ctrl) == {"judge J (offline, not an LLM)": False,
                                            "reference NLL (lower is better)": True}


def test_seed_noise_is_estimated_from_the_null_control_and_added_to_comparisons():
    """A continuous metric (reference NLL) whose seeds differ by more than prompt noise: the
    null comparisons give tau^2, and a comparison's CI grows by tau^2 (1/k_A + 1/k_B)."""
    from selbench.leaderboard.report import paired, seed_shift, with_seed_noise

    rng = np.random.default_rng(3)
    n, tau = 200, 0.01
    base = rng.normal(0, 0.05, n)
    seeds = {s: {("e", str(i)): float(base[i] + shift + rng.normal(0, 0.001))
                 for i in range(n)} for s, shift in enumerate(rng.normal(0, tau, 6))}
    nulls = [paired({a: seeds[a]}, {b: seeds[b]}) for a in range(6) for b in range(a + 1, 6)]
    assert sum(x["ci95"][0] > 0 or x["ci95"][1] < 0 for x in nulls) >= 10  # prompt-only CIs fail
    t2 = seed_shift(nulls)
    shifts = [np.mean(list(v.values())) for v in seeds.values()]
    assert t2 == pytest.approx(np.var(shifts, ddof=1), rel=0.6)  # 6 seeds: a rough estimate
    r = paired({0: seeds[0]}, {1: seeds[1], 2: seeds[2]})
    w = with_seed_noise(r, t2, 1, 2)
    se = math.sqrt(r["se"] ** 2 + t2 * 1.5)
    assert w["ci95"] == pytest.approx((r["diff"] - 1.959964 * se, r["diff"] + 1.959964 * se))
    assert w["ci95_prompts"] == r["ci95"] and w["seed_noise"] == pytest.approx(math.sqrt(t2))
    # no measurable seed shift (a judged outcome whose null CIs hold): the CI is unchanged
    assert with_seed_noise(r, 0.0, 1, 2)["ci95"] == r["ci95"]
    assert seed_shift([]) is None
