"""`bench perf grads`: GrADS-style KDE band scoring on synthetic signals."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..selectors.base import budget, rank_by_score
from ..selectors.grads import kde_band_scores, zscore
from .common import BENCHMARKS, Benchmark, machine, peak_rss_mib, write_result


def run(args) -> None:
    rng = np.random.default_rng(0)
    sig = [rng.lognormal(0, 0.5, args.n) for _ in range(2)]
    t = time.perf_counter()
    combined = np.mean([zscore(s) for s in sig], axis=0)
    scores, _ = kde_band_scores(combined)
    rank_by_score(scores, 0)[: budget(args.ratio, args.n)]
    sec = time.perf_counter() - t
    result = {"what": "grads", "n": args.n, "seconds": sec, "peak_rss_mib": peak_rss_mib(),
              "note": "selection step only (signals come from the gradient pass)",
              "machine": machine()}
    write_result(Path(args.out), "grads", result, {"N": args.n, "selection seconds": f"{sec:.2f}",
                                              "peak RSS MiB": f"{peak_rss_mib():.0f}"})


BENCHMARKS.add('grads', Benchmark(run, 'GrADS-style KDE band scoring on synthetic signals.', {'n': 52002}))
