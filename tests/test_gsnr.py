import numpy as np
import pytest

from selbench.selectors.gsnr import ensemble_stats, gsnr_utility

# norms[m, e, i]: 3 members, 2 epochs, 3 examples
NORMS = np.array([
    [[4.0, 2.0, 1.0], [1.0, 2.0, 2.0]],
    [[6.0, 2.0, 1.0], [3.0, 1.0, 2.0]],
    [[5.0, 2.0, 1.0], [2.0, 3.0, 2.0]],
])


def test_ensemble_stats_by_hand():
    G1, V1 = ensemble_stats(NORMS, 1)
    G2, V2 = ensemble_stats(NORMS, 2)
    np.testing.assert_allclose(G1, [5.0, 2.0, 1.0])
    np.testing.assert_allclose(G2, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(V1, [2 / 3, 0.0, 0.0])  # population variance
    np.testing.assert_allclose(V2, [2 / 3, 2 / 3, 0.0])


def test_gsnr_and_ablations_by_hand():
    eps = 1e-3
    G_s, G_t = np.array([5.0, 2.0, 1.0]), np.array([2.0, 2.0, 2.0])
    V_t = np.array([2 / 3, 2 / 3, 0.0])
    drop = G_s - G_t  # [3, 0, -1]
    np.testing.assert_allclose(gsnr_utility(NORMS, 1, 2, eps, "drop"), drop)
    np.testing.assert_allclose(gsnr_utility(NORMS, 1, 2, eps, "reldrop"), drop / (G_s + eps))
    np.testing.assert_allclose(gsnr_utility(NORMS, 1, 2, eps, "drop-var"), drop / (V_t + eps))
    u = gsnr_utility(NORMS, 1, 2, eps)
    np.testing.assert_allclose(u, [3 / 5.001 / (2 / 3 + eps), 0.0, -1 / 1.001 / eps])
    assert u[2] < 0  # negative utilities are kept and rank last


def test_gsnr_rejects_bad_epochs():
    with pytest.raises(ValueError):
        gsnr_utility(NORMS, 1, 3)
    with pytest.raises(ValueError):
        gsnr_utility(NORMS[0], 1, 2)


def test_ablations_share_one_cached_profile(tiny_pool_rows, tiny_model_dir, tmp_path):
    from selbench.data import Pool
    from selbench.runs import RunDir
    from selbench.selectors import SelectionContext, build_selector
    from selbench.selectors.gsnr import GSNR

    pool = Pool("tiny", tiny_pool_rows, "test")
    rd = RunDir(tmp_path)
    logs = []
    params = GSNR.test_params(tiny_model_dir)
    scores = {}
    for name in ("gsnr", "gsnr-drop", "gsnr-reldrop", "gsnr-drop-var"):
        ctx = SelectionContext(seed=0, run_dir=rd, pool_key="tiny", log=logs.append)
        scores[name] = build_selector(name, params).score(pool, ctx)
    assert sum(m.startswith("[run]") for m in logs) == 1  # one proxy training
    assert sum(m.startswith("[cached]") for m in logs) == 3
    assert len(list((tmp_path / "profiles").iterdir())) == 1
    from selbench.selectors.proxy.profile import Profile

    prof = Profile.load(next((tmp_path / "profiles").iterdir()))
    np.testing.assert_allclose(scores["gsnr"], gsnr_utility(prof.norms, 1, 2, 1e-8))
    np.testing.assert_allclose(scores["gsnr-drop"], gsnr_utility(prof.norms, 1, 2, 1e-8, "drop"))
