import math

import numpy as np
import pytest
from conftest import make_tiny_llama

from selbench.selectors.ifd import (facility_location_greedy, filter_and_rank, ifd_scores,
                                    reference_ifd_scores)

RECORDS = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
    {"instruction": "Translate to French", "input": "good morning", "output": "bonjour"},
    {"instruction": "Repeat: hello world hello", "input": "", "output": "hello"},  # output inside instruction
    {"instruction": "Say nothing.", "input": "", "output": ""},  # empty output -> NaN
    {"instruction": "Write a long story " * 3, "input": "about cats " * 4,
     "output": "Once upon a time " * 40},  # truncated at max_length
    {"instruction": "x", "input": "", "output": "y"},  # a one-token output
    {"instruction": "Sum 2 and 3.", "input": "", "output": "The sum of 2 and 3 is 5, because 2 + 3 = 5."},
]


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return make_tiny_llama(len(tokenizer), seed=1)


def test_batched_equals_batch_size_1_same_code_path(tiny, tokenizer):
    a = ifd_scores(tiny, tokenizer, RECORDS, max_length=48, batch_size=1)
    b = ifd_scores(tiny, tokenizer, RECORDS, max_length=48, batch_size=16)
    for x, y in zip(a, b):
        assert x["status"] == y["status"]
        for k in ("ppl_cond", "ppl_direct", "ifd"):
            if math.isnan(x[k]):
                assert math.isnan(y[k])
            else:
                assert y[k] == pytest.approx(x[k], rel=1e-5)


def test_matches_the_reference_loop(tiny, tokenizer):
    ours = ifd_scores(tiny, tokenizer, RECORDS, max_length=48, batch_size=8)
    ref = reference_ifd_scores(tiny, tokenizer, RECORDS, max_length=48)
    for o, r in zip(ours, ref):
        for k in ("ppl_cond", "ppl_direct", "ifd"):
            if math.isnan(r[k]):
                assert math.isnan(o[k])
            else:
                assert o[k] == pytest.approx(r[k], rel=1e-5)
    assert ours[3]["status"] == "empty_output" and math.isnan(ours[3]["ifd"])


def test_filter_and_rank_semantics():
    ifd = np.array([0.5, np.nan, 1.2, 0.9, 0.0, 1.0, 0.7])
    chosen, rep = filter_and_rank(ifd, 3, 1.0, seed=0)
    assert chosen == [3, 6, 0]
    assert rep == {"nan": 1, "zero": 1, "at_or_above_threshold": 2, "survivors": 4, "short_by": 0}
    chosen, rep = filter_and_rank(ifd, 6, 1.0, seed=0)
    assert chosen == [3, 6, 0, 4] and rep["short_by"] == 2


def test_facility_location_matches_brute_force_greedy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sim = X @ X.T + 1
    picked = facility_location_greedy(sim, 6)

    def f(S):
        return sim[:, S].max(axis=1).sum() if S else 0.0

    S = []
    for _ in range(6):
        gains = [(f(S + [j]) - f(S), -j) for j in range(30) if j not in S]
        S.append(-max(gains)[1])
    assert [f(picked[:i]) for i in range(1, 7)] == pytest.approx([f(S[:i]) for i in range(1, 7)])


def _brute_force_fl(K, k):
    """Plain greedy on f(S) = sum_i max(0, max_{j in S} K[i, j]); ties -> the larger index
    (submodlib's max-heap of (gain, index))."""
    S = []
    for _ in range(k):
        f0 = np.maximum(K[:, S].max(axis=1), 0).sum() if S else 0.0
        gains = [(np.maximum(K[:, S + [j]].max(axis=1), 0).sum() - f0, j)
                 for j in range(K.shape[0]) if j not in S]
        S.append(max(gains)[1])
    return S


def test_submodlib_euclidean_kernel_and_facility_location_match_brute_force():
    from scipy.spatial.distance import cdist

    from selbench.selectors.ifd import submodlib_euclidean_kernel

    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 384))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[11] = X[4]  # an exact duplicate: tied gains
    K = submodlib_euclidean_kernel(X)
    ref = np.exp(-cdist(X, X) / 384.0)
    np.fill_diagonal(ref, 1.0)
    assert K.dtype == np.float32 and np.allclose(K, ref, atol=1e-6)
    assert np.all(np.diag(K) == 1.0)
    K64 = K.astype(np.float64)
    for k in (1, 5, 12, 40):
        assert facility_location_greedy(K64, k) == _brute_force_fl(K64, k)
    # ties: two identical columns; the larger index is taken first
    T = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 1.0], [0.2, 1.0, 1.0]])
    assert facility_location_greedy(T, 1) == _brute_force_fl(T, 1) == [2]


def test_ifd_diverse_takes_10x_candidates_and_picks_by_facility_location(tiny_pool_rows):
    from selbench.data import Pool
    from selbench.embeddings import embed
    from selbench.selectors import SelectionContext, build_selector
    from selbench.selectors.ifd import submodlib_euclidean_kernel

    rows = tiny_pool_rows + [dict(r, id=r["id"] + "b", output=r["output"] + " again")
                             for r in tiny_pool_rows]  # 48 rows
    scores = np.linspace(0.05, 0.95, len(rows))[::-1].copy()
    scores[3] = 1.5  # filtered (IFD >= 1)
    sel = build_selector("ifd-diverse")
    assert sel.config.candidate_multiple == 10.0 and sel.config.kernel == "submodlib-euclidean"
    out = sel.select(Pool("t", rows, "test"), 0.05, SelectionContext(seed=0, log=lambda m: None),
                     scores=scores)
    k = math.ceil(0.05 * 48)
    assert out.info["filter"]["candidates"] == 10 * k
    cand = [i for i in np.argsort(-scores, kind="stable") if scores[i] < 1][: 10 * k]
    E = embed([f"{rows[i]['instruction']}\n{rows[i].get('input', '')}\n{rows[i]['output']}"
               for i in cand], 64, 512)
    expect = [int(cand[j]) for j in _brute_force_fl(submodlib_euclidean_kernel(E).astype(np.float64), k)]
    assert out.indices == expect
