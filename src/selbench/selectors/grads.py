"""GrADS-style gradient-statistics selection ("Learn More, Forget Less: A Gradient-Aware
Data Selection Approach for LLM"). The paper publishes the ingredients (a preliminary
one-epoch SFT on the pool; per-example gradients of the embedding layer and the LM head;
self-guided criteria on gradient magnitude and its distribution) but not the exact
reduction, so this is a documented instantiation, named "GrADS-style" everywhere:

1. Preliminary epoch: the shared gradient profile's member 0 after epoch 1 (LoRA on the
   frozen proxy; reused from the cache when G-SNR/SPICE already trained it).
2. Signals per example, from batched backward passes at those weights: the gradient norm
   of the input-embedding matrix and of the LM head (Gram identity, see
   :func:`selbench.selectors.proxy.pergrad.per_example_embedding_head_norms`); optionally ``lora`` =
   the profile's epoch-1 LoRA gradient norm (member mean).
3. Each signal is standardised over the pool (z-score); combined = mean of z-scores.
4. A Gaussian KDE (scipy.stats.gaussian_kde, Scott bandwidth by default) is fitted to the
   combined signal. Eligible = the high-density band (KDE density >= the
   ``density_quantile`` quantile of densities: sparse outlying regions are out) and not in
   the extreme upper tail (combined <= its ``upper_quantile`` quantile: likely noise).
5. Rank by magnitude (combined signal) within the eligible band; ineligible examples rank
   below every eligible one (by magnitude), so the budget is always met.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..models import default_lora_targets, load_model, load_tokenizer
from .base import SELECTORS, ProfileSelector, SelectionContext, SelectorConfig
from .proxy.config import ProfileConfig
from .proxy.pergrad import per_example_embedding_head_norms
from .proxy.profile import attach_members, cached_profile
from .proxy.scoring import collate, tokenize_pool


@dataclass
class GradsConfig(SelectorConfig):
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    signals: list[str] = field(default_factory=lambda: ["embedding", "lm_head"])  # + "lora"
    bandwidth: str = "scott"  # scott | silverman | a number
    density_quantile: float = 0.10
    upper_quantile: float = 0.98
    batch_size: int = 8


def kde_band_scores(combined: np.ndarray, bandwidth: str = "scott", density_quantile: float = 0.1,
                    upper_quantile: float = 0.98) -> tuple[np.ndarray, dict]:
    """Scores implementing steps 4-5: eligible keep their magnitude, others sink below."""
    from scipy.stats import gaussian_kde

    x = np.asarray(combined, dtype=np.float64)
    bw = float(bandwidth) if bandwidth not in ("scott", "silverman") else bandwidth
    if np.ptp(x) == 0:
        dens = np.ones_like(x)
    else:
        dens = gaussian_kde(x, bw_method=bw)(x)
    dens_cut = np.quantile(dens, density_quantile)
    upper_cut = np.quantile(x, upper_quantile)
    eligible = (dens >= dens_cut) & (x <= upper_cut)
    offset = (x.max() - x.min()) + 1.0
    scores = np.where(eligible, x, x - offset - (x.max() - x.min()))
    return scores, {"eligible": int(eligible.sum()), "density_cut": float(dens_cut),
                    "upper_cut": float(upper_cut)}


def zscore(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


@SELECTORS.register("grads", "grads-style")
class GradsStyle(ProfileSelector):
    config_cls = GradsConfig
    paper_name = "GrADS-style"
    reference = "Learn More, Forget Less: A Gradient-Aware Data Selection Approach for LLM (a documented instantiation)"
    report_rank = 40
    description = "GrADS-style: embedding/LM-head gradient norms, z-combined, KDE band"

    def signals(self, pool, ctx: SelectionContext) -> dict[str, np.ndarray]:
        import torch
        from tqdm.auto import tqdm

        c = self.config
        unknown = set(c.signals) - {"embedding", "lm_head", "lora"}
        if unknown or not c.signals:
            raise ValueError(f"grads signals must be from embedding, lm_head, lora; got {c.signals}")
        prof = cached_profile(pool.rows, c.profile, ctx)
        out: dict[str, np.ndarray] = {}
        if "lora" in c.signals:
            out["lora"] = prof.norms[:, 0, :].mean(axis=0)
        if {"embedding", "lm_head"} & set(c.signals):
            tok = load_tokenizer(c.profile.proxy)
            model = load_model(c.profile.proxy, ctx.device)
            for p in model.parameters():
                p.requires_grad_(False)
            pc = dataclasses.replace(c.profile, members=1)
            pm = attach_members(model, pc, c.profile.target_modules or default_lora_targets(model))
            if prof.snapshot:
                state = dict(pm.named_parameters())
                with torch.no_grad():
                    for n, v in prof.snapshot.items():
                        state[n].copy_(v)
            pm.eval()
            data = tokenize_pool(pool.rows, tok, c.profile.template, c.profile.max_length)
            order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))
            emb = np.zeros(len(data))
            head = np.zeros(len(data))
            for s in tqdm(range(0, len(order), c.batch_size), desc="GrADS signals", unit="batch",
                          disable=not ctx.progress):
                idx = order[s:s + c.batch_size]
                batch = collate([data[i] for i in idx], tok.pad_token_id, ctx.device)
                e, h = per_example_embedding_head_norms(pm, batch)
                emb[idx], head[idx] = e.numpy(), h.numpy()
            if "embedding" in c.signals:
                out["embedding"] = emb
            if "lm_head" in c.signals:
                out["lm_head"] = head
        return out

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        sig = self.signals(pool, ctx)
        combined = np.mean([zscore(v) for v in sig.values()], axis=0)
        scores, info = kde_band_scores(combined, self.config.bandwidth,
                                       self.config.density_quantile, self.config.upper_quantile)
        ctx.notes["grads_band"] = info
        return scores
