"""Study statistics against numpy/scipy/sklearn on known cases."""
import math

import numpy as np
import pytest
from scipy import stats as st

from selbench.leaderboard.stats import (cohen_kappa, judge_agreement, length_bias, mde_pws,
                                        outcome_variance, paired_bootstrap, seed_summary)


def test_mde_formula_and_the_issue_numbers():
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert mde_pws(298, 1, s2=2 / 3, tau2=0.0) == pytest.approx(z * math.sqrt(2 * (2 / 3) / 298))
    # paper scale: ~0.19 with one seed, no seed variance: gaps of ~0.1 are below it
    assert 0.15 < mde_pws(298, 1, s2=2 / 3, tau2=0.0) < 0.2
    # more seeds shrink it by sqrt(k); seed variance adds to it
    assert mde_pws(80, 4, 0.6, 0.01) == pytest.approx(mde_pws(80, 1, 0.6, 0.01) / 2)
    assert mde_pws(80, 1, 0.6, 0.01) > mde_pws(80, 1, 0.6, 0.0)
    assert math.isnan(mde_pws(0, 1))


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
