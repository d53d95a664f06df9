"""One contract test over every registered selector (a new selector is covered the moment
it is registered)."""
import math

import numpy as np
import pytest

from selbench.data import Pool
from selbench.runs import RunDir
from selbench.selectors import SELECTORS, SelectionContext, build_selector
from selbench.selectors.base import budget, rank_by_score


@pytest.fixture
def pool(tiny_pool_rows):
    return Pool("tiny", tiny_pool_rows, "test")


RUN_FIELDS = {"selector", "description", "ratio", "seed", "pool_size", "n_selected"}


@pytest.mark.parametrize("name", SELECTORS.names())
def test_selector_contract(name, pool, tiny_model_dir, tmp_path):
    cls = SELECTORS.get(name)
    params = cls.test_params(tiny_model_dir)
    rd = RunDir(tmp_path / "runs")
    subsets = {}
    for ratio in (0.05, 0.3, 1.0):
        sel = build_selector(name, params)
        ctx = SelectionContext(seed=3, run_dir=rd, pool_key="tiny", log=lambda m: None)
        out = sel.run(pool, ratio, ctx)
        k = math.ceil(ratio * len(pool))
        # a filtering selector may come up short, but only when it says so and by how much
        k -= out.info.get("short_by", 0)
        assert len(out.indices) == k, (name, ratio)
        assert len(set(out.indices)) == k
        assert all(0 <= i < len(pool) for i in out.indices)
        assert np.asarray(out.scores).shape == (len(pool),)
        assert out.info["selection_seconds"] >= 0
        # the run's own fields (pool size, ratio, seed...) are not the selector's to set
        assert not set(out.info) & RUN_FIELDS, (name, set(out.info) & RUN_FIELDS)
        subsets[ratio] = out.indices
    # deterministic for a seed: a fresh selector and context give the same subset
    again = build_selector(name, params).run(
        pool, 0.3, SelectionContext(seed=3, run_dir=RunDir(tmp_path / "fresh"), pool_key="tiny",
                                    log=lambda m: None))
    assert again.indices == subsets[0.3]


def test_budget_and_tie_breaking():
    assert budget(0.05, 200) == 10 and budget(0.05, 201) == 11 and budget(1.0, 7) == 7
    assert budget(1e-6, 10) == 1
    with pytest.raises(ValueError):
        budget(0.0, 10)
    scores = np.array([1.0, 3.0, 3.0, np.nan, 2.0, 3.0])
    order = rank_by_score(scores, seed=0)
    assert set(order[:3]) == {1, 2, 5} and order[3] == 4 and order[4] == 0 and order[5] == 3
    # ties are ordered by the seed, not by file position, and reproducibly
    assert list(rank_by_score(scores, 0)) == list(rank_by_score(scores, 0))
    orders = {tuple(rank_by_score(scores, s)[:3]) for s in range(20)}
    assert len(orders) > 1


def test_random_selector_differs_by_seed(pool):
    a = build_selector("random").run(pool, 0.5, SelectionContext(seed=0, log=lambda m: None))
    b = build_selector("random").run(pool, 0.5, SelectionContext(seed=1, log=lambda m: None))
    assert a.indices != b.indices


def test_unknown_selector_param_is_an_error():
    from selbench.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'eps_typo'"):
        build_selector("gsnr", {"eps_typo": 1})
