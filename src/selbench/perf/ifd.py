"""`bench perf ifd`: Batched IFD scoring vs the reference batch-size-1 loop (speed and agreement)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..hardware import pick_device
from ..models import load_model, load_tokenizer
from ..selectors.ifd import ifd_scores, reference_ifd_scores
from .common import BENCHMARKS, Benchmark, machine, peak_rss_mib, pool_rows, write_result


def run(args) -> None:
    import torch

    dev = pick_device(args.device)
    rows = pool_rows(args.n, args.data_dir)
    tok = load_tokenizer(args.proxy)
    model = load_model(args.proxy, dev).eval()
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def rate(fn):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return len(rows) / (time.perf_counter() - t)

    ifd_scores(model, tok, rows[:4], args.max_length, args.batch_size)  # warm-up
    res = {}
    for _ in range(args.repeats):
        res.setdefault("batched", []).append(rate(lambda: ifd_scores(model, tok, rows, args.max_length, args.batch_size)))
        res.setdefault("ours_bs1", []).append(rate(lambda: ifd_scores(model, tok, rows, args.max_length, 1)))
        res.setdefault("reference_bs1", []).append(rate(lambda: reference_ifd_scores(model, tok, rows, args.max_length)))
    med = {k: float(np.median(v)) for k, v in res.items()}
    a = ifd_scores(model, tok, rows, args.max_length, args.batch_size)
    b = reference_ifd_scores(model, tok, rows, args.max_length)
    rel = max(abs(x["ifd"] - y["ifd"]) / abs(y["ifd"]) for x, y in zip(a, b)
              if y["ifd"] == y["ifd"] and y["ifd"] != 0)
    result = {"what": "ifd", "proxy": args.proxy, "device": dev, "n": len(rows),
              "batch_size": args.batch_size, "examples_per_s": med, "all_runs": res,
              "speedup_vs_reference_bs1": med["batched"] / med["reference_bs1"],
              "speedup_vs_ours_bs1": med["batched"] / med["ours_bs1"],
              "max_rel_diff_vs_reference": rel, "peak_rss_mib": peak_rss_mib(), "machine": machine()}
    write_result(Path(args.out), "ifd", result, {
        "device": dev, "batch": args.batch_size, "batched ex/s": f"{med['batched']:.2f}",
        "ours bs1 ex/s": f"{med['ours_bs1']:.2f}", "reference bs1 ex/s": f"{med['reference_bs1']:.2f}",
        "speedup vs reference": f"{result['speedup_vs_reference_bs1']:.2f}x",
        "max rel diff": f"{rel:.1e}", "peak RSS MiB": f"{peak_rss_mib():.0f}"})


BENCHMARKS.add('ifd', Benchmark(run, 'Batched IFD scoring vs the reference batch-size-1 loop (speed and agreement).', {'n': 64}))
