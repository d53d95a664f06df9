import math

import numpy as np
import pytest

from selbench.selectors.ifd import (facility_location_greedy, filter_and_rank, ifd_scores,
                                    reference_ifd_scores)

from conftest import make_tiny_llama

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
