"""Figures. `bench plot trajectories RUN`: the paper's Figure 1 from a gradient profile.

Point (m, e) is the vector, over all pool examples, of member m's relative gradient drop
from the first recorded epoch, (n_i^(m,1) - n_i^(m,e)) / n_i^(m,1) (so every member starts at
the origin). The M x E points are reduced by PCA (to at most 25 dims) and then t-SNE to 2-D;
each member is one polyline through its epochs. Ensembles whose polylines travel together
have consistent gradient dynamics; spread is the uncertainty G-SNR divides by.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def trajectory_points(norms: np.ndarray) -> np.ndarray:
    """[M*E, N] relative drops from norms [M, E, N] (rows ordered member-major)."""
    M, E, N = norms.shape
    base = np.maximum(norms[:, :1, :], 1e-12)
    return ((norms[:, :1, :] - norms) / base).reshape(M * E, N)


def embed_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(points)
    k = max(1, min(25, n - 1, points.shape[1]))
    z = PCA(n_components=k, random_state=seed).fit_transform(points)
    perplexity = float(max(1.0, min(30.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="random", random_state=seed).fit_transform(z)


def plot_profile(folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = np.load(folder / "norms.npy")
    M, E, _ = norms.shape
    xy = embed_2d(trajectory_points(norms)).reshape(M, E, 2)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=150)
    for m in range(M):
        ax.plot(xy[m, :, 0], xy[m, :, 1], "-o", label=f"member {m}", alpha=0.85)
        for e in range(E):
            ax.annotate(f"e{e + 1}", xy[m, e], fontsize=7, alpha=0.7)
    ax.set_title(f"Gradient-drop trajectories ({M} members x {E} epochs)\nPCA->t-SNE of per-example relative drops")
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = folder / "trajectories.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_trajectories(path: Path) -> Path:
    path = Path(path)
    if (path / "norms.npy").exists():
        return plot_profile(path)
    profiles = sorted(p.parent for p in path.glob("profiles/*/norms.npy"))
    if not profiles:
        raise FileNotFoundError(f"no gradient profile under {path} (run a G-SNR/GrADS/SPICE selection first)")
    outs = [plot_profile(p) for p in profiles]
    return outs[-1]
