"""Seeded random projections of flattened per-example gradients (SPICE-style selectors):
``countsketch`` (each coordinate hashed to one of d buckets with a random sign: an unbiased
sparse JL sketch, O(P) per example) or dense ``gaussian`` / ``rademacher`` matrices (O(P d),
generated from the seed)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch


class Projector:
    """Seeded random projection of flattened per-example gradients [B, P] -> [B, d]."""

    def __init__(self, sizes: list[int], dim: int, kind: str = "countsketch", seed: int = 0,
                 device: str = "cpu"):
        import torch  # lazy: heavy (see the package docstring)
        self.dim, self.kind, self.sizes = dim, kind, sizes
        self.P = int(sum(sizes))
        gen = torch.Generator().manual_seed(seed)
        if kind == "countsketch":
            self.bucket = torch.randint(0, dim, (self.P,), generator=gen).to(device)
            self.sign = (torch.randint(0, 2, (self.P,), generator=gen) * 2 - 1).float().to(device)
        elif kind in ("gaussian", "rademacher"):
            if self.P * dim > 2_000_000_000:
                raise ValueError(f"dense projection {self.P}x{dim} too large; use countsketch")
            if kind == "gaussian":
                m = torch.randn(self.P, dim, generator=gen)
            else:
                m = torch.randint(0, 2, (self.P, dim), generator=gen).float() * 2 - 1
            self.matrix = (m / math.sqrt(dim)).to(device)
        else:
            raise ValueError(f"unknown projection {kind!r} (countsketch | gaussian | rademacher)")

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        import torch  # lazy: heavy (see the package docstring)
        if self.kind == "countsketch":
            out = torch.zeros(flat.size(0), self.dim, device=flat.device)
            out.index_add_(1, self.bucket, flat * self.sign)
            return out
        return flat @ self.matrix
