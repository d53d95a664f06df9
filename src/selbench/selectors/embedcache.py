"""One MiniLM embedding pass per pool, shared by every selector that embeds pool rows.

``ifd-diverse`` (Superfiltering.D), ``kcenter``, ``knn-density`` and ``embed-target`` all
embed pool rows with all-MiniLM-L6-v2 (:func:`selbench.embeddings.embed`: mean pooling, L2
normalised). They read the embeddings through :func:`pool_embeddings`, which keeps them in
resumable shards under ``runs/<exp>/shards/embed-<h8>``, keyed by what decides the vectors:
the embedder, the token limit, the text recipe and the pool. So the pass is computed once
per pool and recipe whichever selector (and ratio) asks first, and each selection records it
with :meth:`~selbench.selectors.base.SelectionContext.shared` under one key, so a study
charges it once. A selector that needs only some rows (ifd-diverse embeds its candidates)
computes only the shards that hold them; a later selector computes the rest.

Without a shard root (``selbench.select`` from Python) the shards live in a temporary
folder for the call.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import stable_hash
from ..embeddings import embed
from ..estimates import forward_flops
from ..shards import ShardStore, ranges

EMBEDDER = "all-MiniLM-L6-v2"
EMBEDDER_PARAMS = 22.7e6  # all-MiniLM-L6-v2 (6 layers, 384 wide), for the FLOP estimate
EMBED_SHARD_SIZE = 2048  # rows per resumable shard (does not change any vector)

# text recipe name -> the text embedded for one Alpaca row
RECIPES: dict[str, Callable[[dict], str]] = {
    # Superfiltering.D's text (code_diversity_fla/do_fla.py): instruction, input, output
    "instruction-input-output": lambda r: f"{r['instruction']}\n{r.get('input', '') or ''}\n{r['output']}",
    # the prompt alone (what a targeted selector compares with eval prompts)
    "instruction-input": lambda r: (f"{r['instruction']}\n{r['input']}" if r.get("input")
                                    else r["instruction"]),
}


def recipe_text(row: dict, recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"unknown embedding text recipe {recipe!r} (known: {', '.join(RECIPES)})")
    return RECIPES[recipe](row)


def embed_flops(texts: list[str], max_length: int) -> float:
    """Rough forward FLOPs of embedding ``texts`` (~4 characters a token, capped)."""
    tokens = sum(min(max_length, 2 + len(t) / 4) for t in texts)
    return forward_flops(EMBEDDER_PARAMS, 1, tokens)


def embed_estimate(n: int, tokens: float, recipe: str, max_length: int) -> dict:
    """What ``bench plan`` shows for the shared embedding pass (one name for every selector
    that reads it, so the plan counts it once)."""
    return {"what": f"{EMBEDDER} embeddings of the pool ({recipe}, at most {max_length} tokens)",
            "flops": forward_flops(EMBEDDER_PARAMS, n, min(tokens, max_length)), "kind": "forward",
            "shared": f"{EMBEDDER} embeddings ({recipe}, {max_length} tokens)"}


def pool_embeddings(rows: list[dict], ctx, recipe: str = "instruction-input-output",
                    max_length: int = 512, batch_size: int = 64,
                    indices: list[int] | None = None) -> np.ndarray:
    """MiniLM embeddings ``[len(indices), 384]`` (float32, unit rows) of ``rows[indices]``
    (every row when None), through the shared shard cache of the pool."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown embedding text recipe {recipe!r} (known: {', '.join(RECIPES)})")
    idx = list(range(len(rows))) if indices is None else [int(i) for i in indices]
    pool = ctx.pool_key or stable_hash([r.get("id", "") for r in rows], n=16)
    key = stable_hash("embed", EMBEDDER, max_length, recipe, pool)
    spans = ranges(len(rows), EMBED_SHARD_SIZE)
    need = sorted({i // EMBED_SHARD_SIZE for i in idx})
    with tempfile.TemporaryDirectory() as tmpd:
        folder = Path(ctx.shard_root) / f"embed-{key}" if ctx.shard_root else Path(tmpd) / "embed"
        store = ShardStore(folder)
        built = [i for i in need if not store.done(i)]
        for i in built:
            s, e = spans[i]
            t0 = time.perf_counter()
            texts = [recipe_text(r, recipe) for r in rows[s:e]]
            E = embed(texts, batch_size, max_length)
            store.write(i, embeddings=E.astype(np.float32),
                        seconds=np.array([time.perf_counter() - t0]),
                        flops=np.array([embed_flops(texts, max_length)]))
        parts, seconds, flops = {}, 0.0, 0.0
        for i in need:
            sh = store.read(i)
            parts[i] = sh["embeddings"]
            seconds += float(sh["seconds"][0])
            flops += float(sh["flops"][0])
    if ctx.shard_root:
        ctx.shared(f"shards/embed-{key}", f"{EMBEDDER} embeddings of the pool ({recipe}, at most "
                   f"{max_length} tokens; {len(need)} of {len(spans)} shards)", seconds,
                   bool(built), flops)
    out = np.zeros((len(idx), parts[need[0]].shape[1] if need else 384), np.float32)
    for j, i in enumerate(idx):
        out[j] = parts[i // EMBED_SHARD_SIZE][i % EMBED_SHARD_SIZE]
    return out
