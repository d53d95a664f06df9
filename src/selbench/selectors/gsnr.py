"""G-SNR (GradFiltering): uncertainty-aware gradient signal-to-noise selection.

From "Uncertainty-Aware Gradient Signal-to-Noise Data Selection for Instruction Tuning".
A small frozen proxy carries an ensemble of M LoRA adapters trained for T epochs
(:mod:`selbench.selectors.proxy`). With n_i^(m,e) = ||g_i^(m,e)||_2 the norm of example i's own
loss gradient for member m at epoch e:

    G_i^(e) = mean_m n_i^(m,e)                       (eq. 3, signal)
    V_i^(e) = population variance over m of n_i^(m,e) (eq. 4, ensemble uncertainty)
    u_i     = (G_i^(s) - G_i^(t)) / (G_i^(s) + eps) * 1 / (V_i^(t) + eps)   (eq. 5)

s = early epoch (default 1), t = late epoch (default 2), both 1-based. High utility =
a gradient that drops a lot, relative to where it started, and that the members agree on.
Negative utilities are kept (they sink to the bottom). The top ceil(ratio*N) are selected.

Table 2 ablations are registered as their own selectors and reuse the same cached profile:
``gsnr-drop`` (#1: G_s - G_t), ``gsnr-reldrop`` (#2: (G_s - G_t)/(G_s + eps)) and
``gsnr-drop-var`` (#3: (G_s - G_t)/(V_t + eps)).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .base import SELECTORS, ProfileSelector, SelectionContext, SelectorConfig
from .proxy.config import ProfileConfig
from .proxy.profile import build_profile, cached_profile


@dataclass
class GSNRConfig(SelectorConfig):
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    early_epoch: int = 1  # s, 1-based
    late_epoch: int = 2  # t, 1-based
    eps: float = 1e-8


def ensemble_stats(norms: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, V) at a 1-based epoch from norms [M, E, N]: member mean and population variance."""
    x = norms[:, epoch - 1, :]
    return x.mean(axis=0), x.var(axis=0, ddof=0)


def gsnr_utility(norms: np.ndarray, s: int = 1, t: int = 2, eps: float = 1e-8,
                 variant: str = "gsnr") -> np.ndarray:
    """Utility per example from norms [M, E, N]; `variant` = gsnr | drop | reldrop | drop-var."""
    if norms.ndim != 3:
        raise ValueError(f"norms must be [members, epochs, N], got shape {norms.shape}")
    if not (1 <= s <= norms.shape[1] and 1 <= t <= norms.shape[1]):
        raise ValueError(f"epochs s={s}, t={t} outside the profile's 1..{norms.shape[1]}")
    G_s, _ = ensemble_stats(norms, s)
    G_t, V_t = ensemble_stats(norms, t)
    drop = G_s - G_t
    if variant == "drop":
        return drop
    if variant == "reldrop":
        return drop / (G_s + eps)
    if variant == "drop-var":
        return drop / (V_t + eps)
    if variant == "gsnr":
        return drop / (G_s + eps) * (1.0 / (V_t + eps))
    raise ValueError(f"unknown G-SNR variant {variant!r}")


class _GSNRBase(ProfileSelector):
    config_cls = GSNRConfig
    variant = "gsnr"

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        c = self.config
        if c.profile.epochs < max(c.early_epoch, c.late_epoch):
            raise ValueError(f"profile.epochs={c.profile.epochs} < late_epoch={c.late_epoch}")
        prof = cached_profile(pool.rows, c.profile, ctx)
        return gsnr_utility(prof.norms, c.early_epoch, c.late_epoch, c.eps, self.variant)


@SELECTORS.register("gsnr", "g-snr", "gradfiltering")
class GSNR(_GSNRBase):
    """G-SNR utility (eq. 5): relative gradient drop times inverse ensemble variance."""

    description = "G-SNR (GradFiltering): relative LoRA-gradient drop / ensemble variance"
    variant = "gsnr"
    paper_name = "G-SNR"
    reference = "Uncertainty-Aware Gradient Signal-to-Noise Data Selection for Instruction Tuning"
    report_rank = 30


@SELECTORS.register("gsnr-drop")
class GSNRDrop(_GSNRBase):
    family = "ablation"
    ablation_of = "gsnr"
    ablation_label = "#1 G_s - G_t"
    report_rank = 31
    description = "G-SNR ablation #1: G_s - G_t"
    variant = "drop"


@SELECTORS.register("gsnr-reldrop")
class GSNRRelDrop(_GSNRBase):
    family = "ablation"
    ablation_of = "gsnr"
    ablation_label = "#2 (G_s - G_t)/(G_s + eps)"
    report_rank = 32
    description = "G-SNR ablation #2: (G_s - G_t) / (G_s + eps)"
    variant = "reldrop"


@SELECTORS.register("gsnr-drop-var")
class GSNRDropVar(_GSNRBase):
    family = "ablation"
    ablation_of = "gsnr"
    ablation_label = "#3 (G_s - G_t)/(V_t + eps)"
    report_rank = 33
    description = "G-SNR ablation #3: (G_s - G_t) / (V_t + eps)"
    variant = "drop-var"


def record_agreement(rows: list[dict], profile: ProfileConfig, device: str = "cpu",
                     top: tuple[float, ...] = (0.05, 0.10), progress: bool = True) -> dict:
    """How far G-SNR rankings from the two recordings agree on the same trained members:
    norms taken for free during each epoch's updates (``record: train``) vs at theta_e in a
    separate eval-mode pass (``record: pass``, eqs. 1-2). One ensemble training yields both.
    Returns Spearman correlations (utilities, and per member/epoch norms) and the overlap of
    the top fractions of the pool."""

    from scipy.stats import spearmanr

    cfg = dataclasses.replace(profile, record="pass", projection_dim=0)
    prof = build_profile(rows, cfg, device, progress=progress, keep_train_norms=True)
    u_pass = gsnr_utility(prof.norms)
    u_train = gsnr_utility(prof.train_norms)
    n = len(rows)
    out = {"n": n, "members": cfg.members, "epochs": cfg.epochs, "proxy": cfg.proxy,
           "max_length": cfg.max_length, "batch_size": cfg.batch_size,
           "spearman_utility": float(spearmanr(u_pass, u_train).statistic),
           "spearman_norms_mean": float(np.mean([
               spearmanr(prof.norms[m, e], prof.train_norms[m, e]).statistic
               for m in range(cfg.members) for e in range(cfg.epochs)])),
           "wall_seconds": prof.meta["wall_seconds"]}
    for frac in top:
        k = max(1, math.ceil(frac * n))
        a = set(np.argsort(-u_pass, kind="stable")[:k].tolist())
        b = set(np.argsort(-u_train, kind="stable")[:k].tolist())
        out[f"top{frac:g}_overlap"] = len(a & b) / k
        out[f"top{frac:g}_k"] = k
    return out
