import numpy as np
import pytest

from selbench.selectors.spice_logdet import greedy_diag, greedy_logdet


def logdet(G, S, alpha):
    d = G.shape[1]
    F = sum((np.outer(G[i], G[i]) for i in S), np.zeros((d, d)))
    return np.linalg.slogdet(np.eye(d) + alpha * F)[1]


@pytest.mark.parametrize("block", [1, 3, 64])
def test_incremental_gains_equal_direct_logdet_differences(block):
    rng = np.random.default_rng(0)
    G = rng.normal(size=(40, 6))
    picks, gains, _ = greedy_logdet(G, 10, alpha=0.7, lam=0.1, block=block, return_gains=True)
    for t, y in enumerate(picks):
        direct = logdet(G, picks[: t + 1], 0.7) - logdet(G, picks[:t], 0.7)
        assert abs(gains[t] - direct) < 1e-8


def test_lambda_zero_equals_brute_force_greedy():
    rng = np.random.default_rng(1)
    G = rng.normal(size=(25, 4)) * rng.uniform(0.2, 2.0, size=(25, 1))
    S = []
    for _ in range(8):
        best = max((logdet(G, S + [x], 1.0) - logdet(G, S, 1.0), -x) for x in range(25) if x not in S)
        S.append(-best[1])
    assert greedy_logdet(G, 8, alpha=1.0, lam=0.0, block=4) == S


def test_conflict_term_is_zero_when_gradients_align():
    rng = np.random.default_rng(2)
    u = rng.normal(size=5)
    G = np.outer(rng.uniform(0.5, 2.0, size=20), u)
    picks, _, pens = greedy_logdet(G, 6, lam=0.5, return_gains=True)
    assert all(p == 0.0 for p in pens)
    assert picks == greedy_logdet(G, 6, lam=0.0)


def test_conflict_term_penalises_opposed_gradients():
    # two big opposite gradients: after picking +e1, -e1 is in conflict
    G = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 0.8]])
    assert greedy_logdet(G, 2, lam=0.0)[:2] == [0, 1]
    assert greedy_logdet(G, 2, lam=10.0)[:2] == [0, 2]


def test_early_stop_reports_short_budget():
    G = np.array([[10.0, 0.0]] + [[1e-3, 0.0]] * 5)
    picks = greedy_logdet(G, 4, lam=0.0, early_stop_omega=0.01)
    assert picks == [0]


def test_diag_variant_matches_brute_force():
    rng = np.random.default_rng(3)
    G = rng.normal(size=(30, 5))

    def f(S):
        F = (G[S] ** 2).sum(axis=0) if S else np.zeros(5)
        return np.log1p(F).sum()

    S = []
    for _ in range(7):
        S.append(max(((f(S + [x]) - f(S)), -x) for x in range(30) if x not in S)[1] * -1)
    assert greedy_diag(G, 7, lam=0.0) == S


def test_diag_lazy_greedy_with_conflict_penalty_matches_brute_force():
    rng = np.random.default_rng(4)
    G = rng.normal(size=(25, 4))
    lam = 0.5

    def gain(S, x):
        F = (G[S] ** 2).sum(axis=0) if S else np.zeros(4)
        d = np.log1p(G[x] ** 2 / (1 + F)).sum()
        if S:
            m = G[S].sum(axis=0)
            d -= lam * max(0.0, -(G[x] @ m) / (np.linalg.norm(G[x]) * np.linalg.norm(m)))
        return d

    S = []
    for _ in range(8):
        S.append(max((gain(S, x), -x) for x in range(25) if x not in S)[1] * -1)
    assert greedy_diag(G, 8, lam=lam) == S


def test_logdet_variants_are_registered_under_their_own_names():
    from selbench.selectors import SELECTORS
    from selbench.selectors.spice_logdet import SpiceLogdet, SpiceLogdetDiag

    assert SELECTORS.get("spice-logdet") is SpiceLogdet
    assert SELECTORS.get("spice-logdet-diag") is SpiceLogdetDiag
    assert SELECTORS.get("spice-diag") is SpiceLogdetDiag  # the old name stays an alias
    assert SELECTORS.get("spice") is not SpiceLogdet  # `spice` is the released algorithm


def test_alpha_is_scaled_to_the_gradient_scale():
    """alpha_scale=median: multiplying every gradient by 1000 (another proxy, another
    projection) changes neither alpha's meaning nor the picks."""
    from selbench.selectors.spice_logdet import effective_alpha, greedy_logdet

    rng = np.random.default_rng(0)
    G = rng.normal(size=(60, 16))
    a1 = effective_alpha(G, 1.0, "median")
    a2 = effective_alpha(1000 * G, 1.0, "median")
    assert a2 == pytest.approx(a1 / 1e6)
    assert np.median(a1 * (G * G).sum(1)) == pytest.approx(1.0)
    assert greedy_logdet(G, 8, a1) == greedy_logdet(1000 * G, 8, a2)
    assert effective_alpha(G, 0.5, "none") == 0.5
