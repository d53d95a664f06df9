"""Figures. `bench plot trajectories RUN`: the paper's Figure 1 from a gradient profile.

Point (m, e) is the vector, over all pool examples, of member m's relative gradient drop
from the first recorded epoch, (n_i^(m,1) - n_i^(m,e)) / n_i^(m,1) (so every member starts at
the origin). The M x E points are projected by PCA onto their first two principal
components (t-SNE on a handful of points is unstable and places identical points far
apart; PCA keeps identical points identical and distances meaningful); each member is one
polyline through its epochs. Ensembles whose polylines travel together have consistent
gradient dynamics; spread is the uncertainty G-SNR divides by. A second panel shows the raw
statistics: mean norm per member and epoch. Figures go to ``runs/<exp>/figures/`` (never
into a stage folder).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def trajectory_points(norms: np.ndarray) -> np.ndarray:
    """[M*E, N] relative drops from norms [M, E, N] (rows ordered member-major)."""
    M, E, N = norms.shape
    base = np.maximum(norms[:, :1, :], 1e-12)
    return ((norms[:, :1, :] - norms) / base).reshape(M * E, N)


def embed_2d(points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA coordinates of the points and the explained variance ratio of each axis."""
    centered = points - points.mean(axis=0, keepdims=True)
    if not np.any(centered):
        return np.zeros((len(points), 2)), np.zeros(2)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    k = min(2, len(s))
    xy = np.zeros((len(points), 2))
    xy[:, :k] = u[:, :k] * s[:k]
    var = np.zeros(2)
    var[:k] = (s[:k] ** 2) / max((s ** 2).sum(), 1e-30)
    return xy, var


def plot_profile(folder: Path, out_dir: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = np.load(folder / "norms.npy")
    M, E, N = norms.shape
    xy, var = embed_2d(trajectory_points(norms))
    xy = xy.reshape(M, E, 2)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=150)
    for m in range(M):
        ax.plot(xy[m, :, 0], xy[m, :, 1], "-o", label=f"member {m}", alpha=0.85)
        ax.annotate(f"e{E}", xy[m, -1], fontsize=7, alpha=0.7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_title(f"Relative gradient-drop trajectories\n({M} members x {E} epochs, N={N}; all start at e1)",
                 fontsize=9)
    ax.set_xlabel(f"PC 1 ({var[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({var[1]:.0%} of variance)")
    ax.legend(fontsize=7)
    mean = norms.mean(axis=2)
    for m in range(M):
        ax2.plot(range(1, E + 1), mean[m], "-o", alpha=0.85, label=f"member {m}")
    ax2.set_xticks(range(1, E + 1))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("mean per-example LoRA gradient norm")
    ax2.set_title("Raw statistic per member and epoch", fontsize=9)
    fig.tight_layout()
    out_dir = Path(out_dir) if out_dir else folder.parent.parent / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"trajectories-{folder.name}.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_trajectories(path: Path, out_dir: Path | None = None) -> Path:
    """Figure 1 for a profile folder, or for the newest profile of a runs/<experiment>."""
    path = Path(path)
    if (path / "norms.npy").exists():
        return plot_profile(path, out_dir)
    profiles = sorted(p.parent for p in path.glob("profiles/*/norms.npy"))
    if not profiles:
        raise FileNotFoundError(
            f"no gradient profile under {path}: run a selector that builds one first, e.g. "
            f"`bench run --selector gsnr` (gsnr and its ablations, grads, spice-logdet build "
            f"runs/<experiment>/profiles/)")
    outs = [plot_profile(p, out_dir) for p in profiles]
    return outs[-1]
