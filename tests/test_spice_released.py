"""`spice`: the released SPICE algorithm (Chang-pw/SPICE @ 01a7b42)."""
import math

import numpy as np
import pytest
from conftest import make_tiny_llama

from selbench.selectors.spice import epoch_order, select_window, window_budgets


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is faster than two on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- brute force
def brute_force(G, k, mode, alpha=1.0, lam=0.1, thr=None, fisher="diag"):
    """The formulas, one candidate at a time (as the reference's loops do)."""
    n, P = G.shape

    def s_of(g, den):
        if fisher == "scalar":
            return float((g * g).sum()) / (1.0 + alpha)
        return float((g * g / den).sum())

    if mode == "top_k":
        gains = [math.log(1.0 + alpha * s_of(G[i], np.ones(P))) for i in range(n)]
        order = sorted(range(n), key=lambda i: gains[i], reverse=True)  # stable
        out = []
        for i in order:
            if len(out) >= k:
                break
            if thr is not None and gains[i] <= gains[order[0]] * thr:
                break
            out.append(i)
        return out
    den = np.ones(P)
    sel, remaining, initial = [], list(range(n)), None
    for _ in range(min(k, n)):
        best, best_score = None, -1e38
        for r in remaining:
            gain = math.log(1.0 + alpha * s_of(G[r], den))
            pen = 0.0
            if sel:
                m = np.stack([G[j] for j in sel]).mean(0)
                cos = float(G[r] @ m) / (float(np.linalg.norm(G[r]) * np.linalg.norm(m)) + 1e-8)
                if cos < 0:
                    pen = lam * abs(cos)
            if gain - pen > best_score:
                best_score, best = gain - pen, (r, gain)
        if thr is not None:
            if initial is None:
                initial = best[1]
            elif best[1] <= initial * thr:
                break
        sel.append(best[0])
        remaining.remove(best[0])
        h = np.abs(G[best[0]]) * G[best[0]]
        den = den + alpha * h * h
    return sel


def _grads(seed, n=24, P=12, dup=True):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, P)) * rng.uniform(0.1, 1.5, size=(n, 1))
    if dup:  # exact ties
        G[7] = G[3]
        G[15] = G[3]
        G[20] = -G[3]  # same norm, opposite direction
    return G


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["top_k", "conflict_penalty"])
@pytest.mark.parametrize("fisher", ["diag", "scalar"])
@pytest.mark.parametrize("thr", [None, 0.6])
def test_window_selection_equals_brute_force(seed, mode, fisher, thr):
    G = _grads(seed)
    for k, alpha, lam in ((8, 1.0, 0.1), (12, 0.5, 2.0), (24, 2.0, 0.1)):
        got = select_window(G, k, mode, alpha, lam, thr, fisher).selected
        assert got == brute_force(G, k, mode, alpha, lam, thr, fisher), (k, alpha, lam)


def test_ties_keep_window_order():
    G = np.ones((5, 3))
    assert select_window(G, 3, "top_k").selected == [0, 1, 2]
    assert select_window(G, 3, "conflict_penalty").selected == [0, 1, 2]


def test_negative_cosines_are_penalised_only_in_conflict_mode():
    # 0 is biggest; 1 is partly opposed to it (cos -0.24) and bigger than 2 (orthogonal)
    G = np.array([[3.0, 0.0, 0.0], [-0.5, 2.0, 0.0], [0.0, 0.0, 1.6]])
    assert select_window(G, 2, "top_k").selected == [0, 1]
    assert select_window(G, 2, "conflict_penalty", lam=0.0).selected == [0, 1]
    wp = select_window(G, 2, "conflict_penalty", lam=5.0)
    assert wp.selected == [0, 2] and wp.penalties == [0.0, 0.0]
    assert wp.selected == brute_force(G, 2, "conflict_penalty", lam=5.0)


def test_den_grows_with_g_to_the_fourth():
    # after picking g=[2], den = 1 + alpha*(|2|*2)^2 = 17 (not 1 + 2^2 = 5)
    G = np.array([[2.0], [1.0]])
    wp = select_window(G, 2, "conflict_penalty", alpha=1.0, lam=0.0)
    assert wp.selected == [0, 1]
    assert wp.gains == pytest.approx([math.log(5.0), math.log(1.0 + 1.0 / 17.0)])


def test_half_life_stop():
    G = np.array([[4.0, 0.0], [0.0, 3.9], [0.1, 0.0], [0.0, 0.1]])
    assert select_window(G, 4, "top_k", halflife_threshold=0.5).selected == [0, 1]
    assert select_window(G, 4, "conflict_penalty", halflife_threshold=0.5).selected == [0, 1]
    # top_k checks the first element too (threshold >= 1 selects nothing), as the reference
    assert select_window(G, 4, "top_k", halflife_threshold=1.0).selected == []


def test_window_budgets_sum_to_the_exact_subset_size():
    for n in (1, 7, 128, 200, 1000, 52002):
        for ratio in (0.01, 0.05, 0.1, 0.5, 1.0):
            k = math.ceil(ratio * n - 1e-9)
            w = window_budgets(n, k, 128)
            assert sum(x[2] for x in w) == k
            assert all(0 <= kw <= b - a for a, b, kw in w)
            assert all(abs(kw - k * (b - a) / n) < 1 + 1e-9 for a, b, kw in w)
    assert window_budgets(200, 10, 128) == [(0, 128, 7), (128, 200, 3)]


def test_epoch_order_is_the_seeded_randperm():
    import torch

    g = torch.Generator().manual_seed(2026 + 1)
    assert epoch_order(50, 2026, 1) == torch.randperm(50, generator=g).tolist()


# --------------------------------------------------------------------------- gradients
@pytest.fixture(scope="module")
def examples(tokenizer):
    from selbench.selectors.spice import tokenize_rows

    rows = [{"instruction": f"say {w} " * (i % 4 + 1), "input": "x y" if i % 3 == 0 else "",
             "output": f"{w} " * (i % 5 + 1)} for i, w in enumerate("ab cd ef gh ij kl mn".split())]
    return tokenize_rows(rows, tokenizer, "spice", 48)


def _lora(tokenizer, dropout):
    import torch

    from selbench.selectors.spice import attach_lora

    model = make_tiny_llama(len(tokenizer), seed=3)
    torch.manual_seed(0)
    m = attach_lora(model, r=4, alpha=8, dropout=dropout)
    with torch.no_grad():  # LoRA B starts at zero; make both factors matter
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return m


def test_batched_per_example_gradients_equal_the_batch_1_loop(tokenizer, examples):
    from selbench.selectors.spice import reference_window_gradients, window_gradients

    m = _lora(tokenizer, 0.0).train()
    n_linear = sum(1 for n, _ in m.named_modules() if n.endswith("lora_A.default"))
    assert n_linear == 2 * 7  # all linear layers of both decoder blocks (not the LM head)
    G, sq, _ = window_gradients(m, examples, tokenizer.pad_token_id, 3, "cpu")
    R = reference_window_gradients(m, examples, tokenizer.pad_token_id, "cpu")
    assert G.shape == R.shape
    rel = float((G - R).norm(dim=1).max() / R.norm(dim=1).min())
    assert rel < 1e-5
    assert np.allclose(sq, (R.double() ** 2).sum(1).numpy(), rtol=1e-5)


def test_with_dropout_batch_1_matches_the_loop_under_the_same_seed(tokenizer, examples):
    import torch

    from selbench.selectors.spice import reference_window_gradients, window_gradients

    m = _lora(tokenizer, 0.05).train()
    ex = sorted(examples, key=lambda e: len(e["input_ids"]))  # our batches go in length order
    torch.manual_seed(11)
    G, _, _ = window_gradients(m, ex, tokenizer.pad_token_id, 1, "cpu")
    torch.manual_seed(11)
    R = reference_window_gradients(m, ex, tokenizer.pad_token_id, "cpu")
    torch.manual_seed(12)
    R2 = reference_window_gradients(m, ex, tokenizer.pad_token_id, "cpu")
    assert float((G - R).abs().max()) < 1e-5 * float(R.abs().max())
    assert float((R2 - R).abs().max()) > 1e-4 * float(R.abs().max())  # dropout is really on


# --------------------------------------------------------------------------- the selector
def _run(tiny_model_dir, rows, ratio, seed=3, **params):
    from selbench.data import Pool
    from selbench.selectors import SelectionContext, build_selector

    p = {"proxy": tiny_model_dir, "max_length": 48, "batch_size": 4, "pool_size": 5,
         "learning_rate": 1e-2, **params}
    sel = build_selector("spice", p)
    return sel.run(Pool("tiny", rows, "test"), ratio, SelectionContext(seed=seed, log=lambda m: None,
                                                                       progress=False))


def test_selector_deterministic_exact_budget_and_training_proxy(tiny_model_dir, tiny_pool_rows):
    a = _run(tiny_model_dir, tiny_pool_rows, 0.3)
    b = _run(tiny_model_dir, tiny_pool_rows, 0.3)
    assert a.indices == b.indices
    assert len(a.indices) == len(set(a.indices)) == math.ceil(0.3 * 24)
    win = a.info["per_window"]
    assert [w["size"] for w in win] == [5, 5, 5, 5, 4]
    assert sum(w["picked"] for w in win) == 8
    # each window's picks come from that window of the seeded permutation
    order = epoch_order(24, 3)
    pos = 0
    for w in win:
        chunk = set(order[w["start"]:w["start"] + w["size"]])
        assert set(a.indices[pos:pos + w["picked"]]) <= chunk
        pos += w["picked"]
    # the proxy trains between windows (the HF warmup makes the first step lr 0)
    assert win[0]["weight_change_since_previous_window"] == 0.0
    assert win[1]["weight_change_since_previous_window"] == 0.0 and win[0]["lr"] == 0.0
    assert all(w["weight_change_since_previous_window"] > 0 for w in win[2:])
    c = _run(tiny_model_dir, tiny_pool_rows, 0.3, seed=4)
    assert c.indices != a.indices
    assert np.isfinite(a.scores).all() and a.scores.shape == (24,)


def test_selector_conflict_mode_and_reference_projection(tiny_model_dir, tiny_pool_rows):
    out = _run(tiny_model_dir, tiny_pool_rows, 0.5, mode="conflict_penalty",
               projection_dim=32, projection="gaussian", pool_size=12)
    assert len(out.indices) == 12 == len(set(out.indices))
    assert out.info["projection"] == "gaussian"
    full = _run(tiny_model_dir, tiny_pool_rows, 1.0, pool_size=12)
    assert sorted(full.indices) == list(range(24))


def test_half_life_leaves_the_subset_short_and_says_so(tiny_model_dir, tiny_pool_rows):
    out = _run(tiny_model_dir, tiny_pool_rows, 0.5, halflife_threshold=0.9999)
    assert out.info["short_by"] > 0
    assert len(out.indices) == 12 - out.info["short_by"]
    assert "short" in out.info["filter_report"]


def test_token_capped_batches_give_the_same_gradients_and_update(tokenizer, examples):
    import torch

    from selbench.selectors.spice import Spice, token_batches, window_gradients

    lengths = [len(e["input_ids"]) for e in examples]
    for b in token_batches(lengths, 4, 40):
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 40
    m = _lora(tokenizer, 0.0).train()
    G1, _, _ = window_gradients(m, examples, tokenizer.pad_token_id, 8, "cpu")
    G2, _, _ = window_gradients(m, examples, tokenizer.pad_token_id, 8, "cpu", max_tokens=30)
    assert float((G1 - G2).abs().max()) <= 1e-5 * float(G1.abs().max())

    def step(max_tokens):
        from transformers import get_linear_schedule_with_warmup

        mm = _lora(tokenizer, 0.0).train()
        params = [p for p in mm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
        sched = get_linear_schedule_with_warmup(opt, 1, 4)
        for _ in range(2):  # the first step has lr 0
            Spice._update(mm, opt, sched, examples, tokenizer.pad_token_id, "cpu", 4, max_tokens)
        return torch.cat([p.detach().reshape(-1) for p in params])

    a, b = step(None), step(30)
    assert float((a - b).abs().max()) < 1e-6
