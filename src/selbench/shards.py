"""Sharded scoring with shard-level resume.

A scoring job over N items is cut into deterministic shards (item ranges for IFD; ensemble
members for the gradient profile). Rank r of W processes owns the shards i with i % W == r;
each shard is written atomically (temp file + rename) into a persistent shard folder as
soon as it finishes, so a crash loses at most the shard in progress, and a rerun (with any
number of processes) computes only the missing shards. Rank 0 (the driver) merges them
into the stage's output and then removes the shard folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np


class ShardStore:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, i: int) -> Path:
        return self.folder / f"shard-{i:05d}.npz"

    def done(self, i: int) -> bool:
        return self.path(i).exists()

    def write(self, i: int, **arrays) -> None:
        tmp = self.folder / f".tmp-shard-{i:05d}-{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.path(i))

    def read(self, i: int) -> dict[str, np.ndarray]:
        with np.load(self.path(i), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def todo(self, n_shards: int, rank: int = 0, world: int = 1) -> list[int]:
        return [i for i in range(n_shards) if i % world == rank and not self.done(i)]

    def missing(self, n_shards: int) -> list[int]:
        return [i for i in range(n_shards) if not self.done(i)]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def ranges(n: int, size: int) -> list[tuple[int, int]]:
    """Deterministic item ranges [start, end) of at most `size` items."""
    return [(s, min(n, s + size)) for s in range(0, n, size)]
