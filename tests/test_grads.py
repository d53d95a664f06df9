import numpy as np
import pytest
import torch
from conftest import make_tiny_llama

from selbench.selectors.grads import kde_band_scores, zscore
from selbench.selectors.proxy.pergrad import per_example_embedding_head_norms
from selbench.selectors.proxy.scoring import collate, per_example_losses


def test_embedding_and_head_norms_match_materialised_per_example_gradients():
    model = make_tiny_llama(50, seed=4)
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    ex = []
    for L in (6, 11, 4):
        ids = torch.randint(3, 12, (L,), generator=g).tolist()  # small range: repeated tokens
        ex.append({"input_ids": ids, "labels": [-100, -100] + ids[2:]})
    batch = collate(ex, pad_id=0, device="cpu")
    e, h = per_example_embedding_head_norms(model, batch)
    W = model.get_output_embeddings().weight
    for i, x in enumerate(ex):
        one = collate([x], 0, "cpu")
        emb = model.get_input_embeddings()(one["input_ids"]).detach().requires_grad_(True)
        headw = W.detach().clone().requires_grad_(True)
        hid = model.model(inputs_embeds=emb, attention_mask=one["attention_mask"]).last_hidden_state
        logits = hid @ headw.T
        loss = per_example_losses(logits, one["labels"])[0]
        d_emb, d_head = torch.autograd.grad(loss, [emb, headw])
        E = torch.zeros_like(W).index_add(0, one["input_ids"][0], d_emb[0])
        assert e[i].item() == pytest.approx(E.norm().item(), rel=1e-5)
        assert h[i].item() == pytest.approx(d_head.norm().item(), rel=1e-5)


def test_kde_band_excludes_upper_tail_and_sparse_points():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 500), [8.0, 9.0, -7.0]])
    scores, info = kde_band_scores(x, density_quantile=0.05, upper_quantile=0.98)
    order = np.argsort(-scores)
    top = set(order[:100].tolist())
    assert not ({500, 501, 502} & top)  # isolated extremes never lead
    assert info["eligible"] < len(x)
    elig = scores > scores.min() + (x.max() - x.min())
    assert np.all(np.argsort(-scores)[: info["eligible"]] == np.argsort(-np.where(elig, x, -np.inf))[: info["eligible"]])
    np.testing.assert_allclose(zscore(np.array([1.0, 2.0, 3.0])), [-1.2247449, 0, 1.2247449], rtol=1e-6)
