"""`bench perf spice`: SPICE as released: the window loop, and batched per-example gradients vs the reference loop."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data import Pool
from ..hardware import pick_device
from ..models import load_model, load_tokenizer
from ..selectors.base import SelectionContext
from ..selectors.spice import (Spice, SpiceConfig, attach_lora, reference_window_gradients,
                               tokenize_rows, window_gradients)
from .common import BENCHMARKS, Benchmark, machine, peak_rss_mib, pool_rows, write_result


def run(args) -> None:
    """The released SPICE loop (``spice``) on the embedded proxy: windows/s and examples/s of
    the whole loop (batched per-example gradients + window selection + the proxy's AdamW
    step), then, on one window at the same weights, batched per-example gradients vs the
    reference's batch-size-1 autograd loop (time and max relative difference, dropout off
    so that both compute the same gradients)."""
    import torch

    dev = pick_device(args.device)
    n = args.windows * args.pool_size
    rows = pool_rows(n, args.data_dir)
    cfg = SpiceConfig(proxy=args.proxy, max_length=args.max_length, batch_size=args.batch_size,
                      pool_size=args.pool_size, mode=args.mode)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    sel = Spice(cfg).run(Pool("perf", rows, "alpaca"), args.ratio,
                         SelectionContext(seed=0, device=dev, log=lambda m: None))
    sync()
    loop_s = time.perf_counter() - t
    info = sel.info
    # one window, same weights: batched hooks vs the batch-size-1 loop
    tok = load_tokenizer(args.proxy)
    torch.manual_seed(0)
    model = attach_lora(load_model(args.proxy, dev), cfg.lora_r, cfg.lora_alpha, 0.0)
    with torch.no_grad():  # LoRA B starts at 0: give it weights so every gradient is non-zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    model.train()
    data = tokenize_rows(rows[: args.pool_size], tok, "spice", args.max_length)
    runs: dict[str, list[float]] = {"batched": [], "batch1": []}
    rel = 0.0
    for _ in range(args.repeats):  # interleaved, so both share the machine's noise
        sync()
        t = time.perf_counter()
        G, _, _ = window_gradients(model, data, tok.pad_token_id, args.batch_size, dev)
        sync()
        runs["batched"].append(time.perf_counter() - t)
        t = time.perf_counter()
        R = reference_window_gradients(model, data, tok.pad_token_id, dev)
        sync()
        runs["batch1"].append(time.perf_counter() - t)
        rel = max(rel, float(((G - R).norm(dim=1) / R.norm(dim=1).clamp(min=1e-30)).max()))
        del G, R
    batched_s, bs1_s = float(np.median(runs["batched"])), float(np.median(runs["batch1"]))
    tokens = float(np.mean([len(d["input_ids"]) for d in data]))
    result = {"what": "spice", "algorithm": "released SPICE (Chang-pw/SPICE@01a7b42)",
              "proxy": args.proxy, "device": dev, "mode": args.mode, "windows": args.windows,
              "pool_size": args.pool_size, "batch_size": args.batch_size,
              "max_length": args.max_length, "ratio": args.ratio, "picked": len(sel.indices),
              "lora_params": info["lora_params"], "mean_tokens_per_example": tokens,
              "loop_seconds": loop_s, "windows_per_s": args.windows / loop_s,
              "examples_per_s": n / loop_s,
              "loop_split_seconds": {k: info[k] for k in ("gradient_seconds",
                                                          "window_select_seconds",
                                                          "train_seconds", "wall_seconds")},
              "one_window": {"examples": len(data), "batched_seconds": batched_s,
                             "batch1_loop_seconds": bs1_s,
                             "batched_examples_per_s": len(data) / batched_s,
                             "batch1_examples_per_s": len(data) / bs1_s,
                             "speedup": bs1_s / batched_s, "all_runs_seconds": runs,
                             "max_rel_diff_vs_batch1": rel},
              "peak_rss_mib": peak_rss_mib(), "machine": machine()}
    write_result(Path(args.out), "spice", result, {
        "device": dev, "mode": args.mode, "windows x pool": f"{args.windows} x {args.pool_size}",
        "batch": args.batch_size, "max len": args.max_length,
        "windows/s": f"{result['windows_per_s']:.4f}", "ex/s (loop)": f"{result['examples_per_s']:.2f}",
        "batched grads ex/s": f"{len(data) / batched_s:.2f}",
        "bs1 loop ex/s": f"{len(data) / bs1_s:.2f}", "speedup": f"{bs1_s / batched_s:.2f}x",
        "max rel diff": f"{rel:.1e}", "peak RSS MiB": f"{peak_rss_mib():.0f}"})


BENCHMARKS.add('spice', Benchmark(run, 'SPICE as released: the window loop, and batched per-example gradients vs the reference loop.', {'n': 256, 'batch_size': 8, 'max_length': 256}))
