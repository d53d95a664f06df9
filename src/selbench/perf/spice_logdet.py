"""`bench perf spice-logdet`: spice-logdet's exact greedy on synthetic projected gradients (N x d)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..selectors.base import budget
from ..selectors.spice_logdet import greedy_logdet
from .common import BENCHMARKS, Benchmark, machine, peak_rss_mib, write_result


def run(args) -> None:
    """``spice-logdet``'s greedy on synthetic Gaussian projected gradients (N x d)."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    G /= np.sqrt(args.dim)
    k = budget(args.ratio, args.n)
    rss0 = peak_rss_mib()
    t = time.perf_counter()
    picks = greedy_logdet(G, k, block=args.block)
    sec = time.perf_counter() - t
    result = {"what": "spice-logdet", "n": args.n, "dim": args.dim, "k": k, "block": args.block,
              "seconds": sec, "picked": len(picks), "peak_rss_mib": peak_rss_mib(),
              "rss_before_greedy_mib": rss0, "gradient_matrix_mib": G.nbytes / 2**20,
              "machine": machine()}
    write_result(Path(args.out), "spice-logdet", result, {
        "N": args.n, "d": args.dim, "k": k, "seconds": f"{sec:.1f}",
        "peak RSS MiB": f"{peak_rss_mib():.0f}", "G MiB": f"{G.nbytes / 2**20:.0f}"})


BENCHMARKS.add('spice-logdet', Benchmark(run, "spice-logdet's exact greedy on synthetic projected gradients (N x d).", {'n': 52002}))
