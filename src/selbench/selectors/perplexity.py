"""Proxy perplexity of the response given the prompt, in top / middle / bottom bands.

The perplexity baseline of CCDS (arXiv 2410.16208, oseyosey/CCDS) as the large-scale study
(arXiv 2503.01807, hamishivi/automated-instruction-selection ``scripts/ppl_selections.py``)
runs it. Score = PPL(y|x), the perplexity of the response given the prompt under the small
frozen proxy, i.e. the ``ppl_cond`` of the IFD pass (:mod:`.ifd`): prompt
``"{instruction}\\n{input}\\n"`` (no input: ``"{instruction}\\n"``), response tokens only,
exp(mean token loss), at most ``max_length`` tokens. It is read from the very shards the
``ifd`` / ``ifd-diverse`` selectors write (same key: proxy, max_length, pool), so IFD and
perplexity share one pass, computed once and charged once.

Bands, over the V rows with a usable perplexity sorted by PPL descending (ties by the
seeded tie-break), k = ceil(ratio * N):

- ``top``: the first k (highest perplexity; 2503.01807's "top-ppl");
- ``middle``: k rows from position floor(0.33 V) on, i.e. from the 33rd percentile of the
  descending order (2503.01807's ``--mid_ppl``: ``sorted[int(0.33 V): int(0.33 V) + k]``);
  when that runs past the end the window is moved back to end at V (theirs would come up
  short);
- ``bottom``: the last k (lowest perplexity; what CCDS's released ``write_selected_data_ppl_*``
  scripts keep before reordering them).

Rows without a usable perplexity (empty output, no scored token, a scoring error: IFD
statuses other than ok / zero_division) are left out; if fewer than k remain, all are taken
and the shortfall is reported (``short_by``). Differences from the references: their
perplexity is of the whole chat-formatted sequence (2503.01807: labels = input_ids, prompt
included; CCDS: ``"{question} A:{answer}"`` with a sliding window), not of the response
given the prompt; their ties keep file order.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..estimates import forward_flops, model_params
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget, rank_by_score
from .ifd import IFDConfig, sharded_ifd_scores

BANDS = ("top", "middle", "bottom")
MIDDLE_START = 0.33  # 2503.01807's mid-ppl window starts at the 33rd percentile
USABLE = ("ok", "zero_division")  # IFD statuses whose PPL(y|x) is a real perplexity


@dataclass
class PerplexityConfig(SelectorConfig):
    band: str = "top"
    """top (highest PPL(y|x)) | middle (from the 33rd percentile down) | bottom (lowest)."""
    proxy: str = "smollm2-135m-instruct"
    """The frozen proxy that scores PPL(y|x) (the IFD pass's proxy: the same one shares it)."""
    max_length: int = 1024
    batch_size: int = 16


def band_order(ppl: np.ndarray, usable: np.ndarray, k: int, band: str, seed: int) -> list[int]:
    """The k rows of ``band`` among the usable rows, in rank order (PPL descending)."""
    if band not in BANDS:
        raise ValueError(f"perplexity band must be one of {', '.join(BANDS)}, got {band!r}")
    order = [int(i) for i in rank_by_score(np.where(usable, ppl, np.nan), seed) if usable[i]]
    V = len(order)
    if band == "top":
        return order[:k]
    if band == "bottom":
        return order[max(0, V - k):]
    start = min(int(MIDDLE_START * V), max(0, V - k))
    return order[start:start + k]


@SELECTORS.register("perplexity", "ppl")
class Perplexity(Selector):
    """Proxy PPL(y|x) from the shared IFD pass; top, middle or bottom band."""

    config_cls = PerplexityConfig
    description = "proxy perplexity PPL(y|x) (from the shared IFD pass), top/middle/bottom band"
    paper_name = "Perplexity"
    reference = ("arXiv 2410.16208 (CCDS); arXiv 2503.01807, hamishivi/automated-instruction-"
                 "selection scripts/ppl_selections.py")
    family = "baseline"
    report_rank = 22
    needs = ("proxy",)
    cost_class = "proxy-forward"

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"proxy": tiny_model, "max_length": 64, "batch_size": 8, "band": "middle"}

    def _ifd_config(self) -> IFDConfig:
        c = self.config
        return IFDConfig(proxy=c.proxy, max_length=c.max_length, batch_size=c.batch_size)

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict | None:
        P = model_params(self.config.proxy)
        if not P:
            return None
        # the IFD pass itself (same "shared" name as ifd's estimate: the plan counts it once)
        return {"what": f"IFD pass of {self.config.proxy} (two forward passes per example)",
                "flops": forward_flops(P, n, min(tokens, self.config.max_length), 2.0),
                "kind": "forward", "shared": f"IFD pass of {self.config.proxy}"}

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        t0 = time.perf_counter()
        res = sharded_ifd_scores(pool.rows, self._ifd_config(), ctx)
        self._usable = np.array([r["status"] in USABLE and math.isfinite(r["ppl_cond"])
                                 for r in res], dtype=bool)
        ctx.notes["ifd_status"] = {s: sum(r["status"] == s for r in res)
                                   for s in sorted({r["status"] for r in res})}
        ctx.notes["score_seconds"] = time.perf_counter() - t0
        return np.array([r["ppl_cond"] if u else np.nan for r, u in zip(res, self._usable)],
                        dtype=np.float64)

    def select(self, pool, ratio, ctx, scores=None) -> Selection:
        band = self.config.band
        if band not in BANDS:
            raise ValueError(f"perplexity band must be one of {', '.join(BANDS)}, got {band!r}")
        k = budget(ratio, len(pool))
        scores = self.score(pool, ctx) if scores is None else np.asarray(scores, dtype=np.float64)
        usable = np.isfinite(scores)
        chosen = band_order(scores, usable, k, band, ctx.seed)
        short = k - len(chosen)
        info = {"budget": k, "band": band, "usable": int(usable.sum()),
                "filter_report": f"{band} band of PPL(y|x) over {int(usable.sum())} rows with a "
                                 f"usable perplexity ({int((~usable).sum())} left out)"}
        if short:
            info["short_by"] = short
        return Selection(chosen, scores, info)
