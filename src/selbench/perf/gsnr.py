"""`bench perf gsnr`: Per-example LoRA norms from the training backward vs plain training vs a batch-size-1 loop (G-SNR profile cost)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..hardware import pick_device
from ..models import default_lora_targets, load_model, load_tokenizer
from ..selectors.proxy.config import ProfileConfig
from ..selectors.proxy.pergrad import PerExampleGrads
from ..selectors.proxy.profile import attach_members, member_params
from ..selectors.proxy.scoring import collate, scored_losses, tokenize_pool
from .common import BENCHMARKS, Benchmark, machine, peak_rss_mib, pool_rows, write_result


def run(args) -> None:
    import torch

    dev = pick_device(args.device)
    rows = pool_rows(args.n, args.data_dir)
    tok = load_tokenizer(args.proxy)
    model = load_model(args.proxy, dev)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = ProfileConfig(proxy=args.proxy, members=1, batch_size=args.batch_size)
    pm = attach_members(model, cfg, default_lora_targets(model))
    pm.base_model.set_adapter("m0")
    params = member_params(pm, "m0")
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=5e-5)
    data = sorted(tokenize_pool(rows, tok, "alpaca", args.max_length), key=lambda d: len(d["input_ids"]))
    batches = [data[s:s + args.batch_size] for s in range(0, len(data), args.batch_size)]
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def step(batch, record: bool):
        b = collate(batch, tok.pad_token_id, dev)
        if record:
            with PerExampleGrads(pm) as cap:
                scored_losses(pm, b).sum().backward()
                cap.norms()
        else:
            scored_losses(pm, b).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def naive(batch):
        for e in batch:  # per-example norms by a batch-size-1 autograd loop ...
            b = collate([e], tok.pad_token_id, dev)
            scored_losses(pm, b).sum().backward()
            torch.sqrt(sum((p.grad ** 2).sum() for p in params)).item()
            opt.zero_grad(set_to_none=True)
        step(batch, False)  # ... plus the training step itself

    def timed(fn, *a):
        sync()
        t = time.perf_counter()
        for batch in batches:
            fn(batch, *a)
        sync()
        return len(data) / (time.perf_counter() - t)

    step(batches[0], True)  # warm-up
    res = {}
    for rep in range(args.repeats):  # interleaved to share machine noise
        res.setdefault("plain", []).append(timed(step, False))
        res.setdefault("with_norms", []).append(timed(step, True))
        res.setdefault("naive_bs1", []).append(timed(naive))
    med = {k: float(np.median(v)) for k, v in res.items()}
    tokens = float(np.mean([len(d["input_ids"]) for d in data]))
    scored = float(np.mean([sum(l != -100 for l in d["labels"]) for d in data]))
    n_emb = model.get_input_embeddings().weight.numel()
    n_body = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n) - n_emb
    head = model.get_output_embeddings().weight.numel()
    flops = 4 * n_body * tokens + 4 * head * scored  # fwd 2PT + bwd (activation grads) 2PT
    result = {"what": "gsnr", "proxy": args.proxy, "device": dev, "n": len(data),
              "batch_size": args.batch_size, "mean_tokens": tokens,
              "examples_per_s": med, "all_runs": res,
              "ratio_with_norms_over_plain_time": med["plain"] / med["with_norms"],
              "speedup_over_naive": med["with_norms"] / med["naive_bs1"],
              "proxy_gflops_per_example_est": flops / 1e9, "peak_rss_mib": peak_rss_mib(),
              "machine": machine()}
    write_result(Path(args.out), "gsnr", result, {
        "device": dev, "batch": args.batch_size, "plain ex/s": f"{med['plain']:.2f}",
        "with norms ex/s": f"{med['with_norms']:.2f}", "naive bs1 ex/s": f"{med['naive_bs1']:.2f}",
        "(b)/(a) time": f"{result['ratio_with_norms_over_plain_time']:.3f}",
        "(b) vs (c)": f"{result['speedup_over_naive']:.2f}x",
        "GFLOP/ex": f"{flops / 1e9:.1f}", "peak RSS MiB": f"{peak_rss_mib():.0f}"})


BENCHMARKS.add('gsnr', Benchmark(run, 'Per-example LoRA norms from the training backward vs plain training vs a batch-size-1 loop (G-SNR profile cost).', {'n': 64, 'max_length': 256}))
