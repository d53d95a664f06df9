"""Published Alpaca subsets as selectors (real shared data: positions -> rows by content)."""
import json

import pytest

from selbench.data import Pool, load_pool
from selbench.selectors import SELECTORS, SelectionContext, build_selector


def _published_rows(data_dir, entry):
    idx = json.loads((data_dir / "published_selections/alpaca_selection_indices.json").read_text())
    alpaca = json.loads((data_dir / "train/alpaca_data.json").read_text())
    return [(alpaca[p]["instruction"], alpaca[p]["input"], alpaca[p]["output"])
            for p in idx["selections"][entry]["alpaca_indices"]]


def test_published_names_are_registered():
    assert "published:cherry-ifd-5pct" in SELECTORS
    assert SELECTORS.canonical("published:cherry_llm_ifd_alpaca_5_percent") == "published:cherry-ifd-5pct"


@pytest.mark.slow
def test_cherry_subset_maps_to_the_same_rows(data_dir):
    pool = load_pool("alpaca", str(data_dir))
    ctx = SelectionContext(seed=0, data_dir=str(data_dir), log=lambda m: None)
    sel = build_selector("published:cherry-ifd-5pct").run(pool, 0.06, ctx)
    want = _published_rows(data_dir, "cherry_llm_ifd_alpaca_5_percent")
    got = [(pool.rows[i]["instruction"], pool.rows[i]["input"], pool.rows[i]["output"])
           for i in sel.indices]
    # every published row is an Alpaca row with a non-empty output: all 3,111 are in the pool,
    # in the published order, and the selection is exactly that subset
    assert sel.info["published_size"] == 3111 and sel.info["published_in_pool"] == 3111
    assert got == want
    from selbench.selectors.base import budget

    assert sel.info["short_by"] == budget(0.06, len(pool)) - 3111
    assert sel.scores.sum() == 3111
    # a smaller ratio takes the first rows in published order
    small = build_selector("published:cherry-ifd-5pct").run(pool, 0.05, ctx)
    assert small.indices == sel.indices[:budget(0.05, len(pool))] and small.info["truncated_from"] == 3111


@pytest.mark.slow
def test_sampled_pool_takes_the_intersection_and_reports_it(data_dir):
    pool = load_pool("alpaca", str(data_dir), size=2000, seed=0)
    ctx = SelectionContext(seed=0, data_dir=str(data_dir), log=lambda m: None)
    sel = build_selector("published:long-is-more-1k-longest").run(pool, 0.5, ctx)
    want = set(_published_rows(data_dir, "long_is_more_alpaca_1k_longest"))
    inter = [i for i, r in enumerate(pool.rows) if (r["instruction"], r["input"], r["output"]) in want]
    assert sorted(sel.indices) == inter and sel.info["published_in_pool"] == len(inter)
    assert 0 < len(inter) < 200 and sel.info["short_by"] == 1000 - len(inter)
    assert "in this pool of 2000" in sel.info["filter_report"]


def test_other_pools_are_refused(tiny_pool_rows):
    ctx = SelectionContext(seed=0, log=lambda m: None)
    with pytest.raises(ValueError, match="subset of the 'alpaca' pool"):
        build_selector("published:dq-k5-1k").run(Pool("tiny", tiny_pool_rows, "t"), 0.1, ctx)


def test_positions_map_by_content_on_a_small_index(tmp_path, tiny_pool_rows):
    """Fast: a 6-row 'Alpaca' file, an index over it, a pool holding some of those rows
    (reordered, with an extra row): the selection is the published rows found in the pool,
    in published order, whatever their pool positions."""
    from selbench.data import content_id

    alp = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]}
           for r in tiny_pool_rows[:6]]
    (tmp_path / "alpaca.json").write_text(json.dumps(alp))
    (tmp_path / "index.json").write_text(json.dumps({"selections": {
        "dq_k5_1k": {"source_repo": "x/y", "alpaca_indices": [4, 0, 2, 5]}}}))
    rows = [dict(r, id=content_id(r["instruction"], r["input"], r["output"]))
            for r in [alp[5], alp[1], alp[0], alp[3], tiny_pool_rows[10]]]
    pool = Pool("alpaca", rows, "t")
    params = {"index_file": str(tmp_path / "index.json"), "alpaca_file": str(tmp_path / "alpaca.json")}
    sel = build_selector("published:dq-k5-1k", params).run(
        pool, 1.0, SelectionContext(seed=0, log=lambda m: None))
    assert sel.indices == [2, 0]  # published order 4 (absent), 0 -> pool 2, 2 (absent), 5 -> pool 0
    assert sel.info["published_in_pool"] == 2 and sel.info["short_by"] == 3
    assert list(sel.scores) == [1, 0, 1, 0, 0]
    one = build_selector("published:dq-k5-1k", params).run(
        pool, 0.2, SelectionContext(seed=0, log=lambda m: None))
    assert one.indices == [2] and "short_by" not in one.info
