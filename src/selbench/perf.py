"""`bench perf gsnr|ifd|spice|grads`: speed/memory benchmarks written to <out>/<what>.json
and appended as a markdown row to <out>/<what>.md. Benchmarks, not tests: numbers depend
on the machine, which is recorded with them."""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _machine() -> dict:
    from .runs import device_info

    return device_info()


def _write(out: Path, what: str, result: dict, md_row: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{what}.json").write_text(json.dumps(result, indent=2, default=str))
    md = out / f"{what}.md"
    header = "| " + " | ".join(md_row) + " |\n|" + "---|" * len(md_row) + "\n"
    if not md.exists():
        md.write_text(header)
    with md.open("a") as f:
        f.write("| " + " | ".join(str(v) for v in md_row.values()) + " |\n")
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {out / (what + '.json')} and {md}")


def _pool_rows(n: int, data_dir: str | None, seed: int = 0):
    from .data import load_pool

    return load_pool("alpaca", data_dir, size=n, seed=seed).rows


# --------------------------------------------------------------------------- gsnr
def perf_gsnr(args) -> None:
    import torch

    from .gradients import (PerExampleGrads, ProfileConfig, attach_members, collate,
                            member_params, scored_losses, tokenize_pool)
    from .models import default_lora_targets, load_model, load_tokenizer, pick_device

    dev = pick_device(args.device)
    rows = _pool_rows(args.n, args.data_dir)
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
              "machine": _machine()}
    _write(Path(args.out), "gsnr", result, {
        "device": dev, "batch": args.batch_size, "plain ex/s": f"{med['plain']:.2f}",
        "with norms ex/s": f"{med['with_norms']:.2f}", "naive bs1 ex/s": f"{med['naive_bs1']:.2f}",
        "(b)/(a) time": f"{result['ratio_with_norms_over_plain_time']:.3f}",
        "(b) vs (c)": f"{result['speedup_over_naive']:.2f}x",
        "GFLOP/ex": f"{flops / 1e9:.1f}", "peak RSS MiB": f"{peak_rss_mib():.0f}"})


# --------------------------------------------------------------------------- ifd
def perf_ifd(args) -> None:
    import torch

    from .models import load_model, load_tokenizer, pick_device
    from .selectors.ifd import ifd_scores, reference_ifd_scores

    dev = pick_device(args.device)
    rows = _pool_rows(args.n, args.data_dir)
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
              "max_rel_diff_vs_reference": rel, "peak_rss_mib": peak_rss_mib(), "machine": _machine()}
    _write(Path(args.out), "ifd", result, {
        "device": dev, "batch": args.batch_size, "batched ex/s": f"{med['batched']:.2f}",
        "ours bs1 ex/s": f"{med['ours_bs1']:.2f}", "reference bs1 ex/s": f"{med['reference_bs1']:.2f}",
        "speedup vs reference": f"{result['speedup_vs_reference_bs1']:.2f}x",
        "max rel diff": f"{rel:.1e}", "peak RSS MiB": f"{peak_rss_mib():.0f}"})


# --------------------------------------------------------------------------- spice / grads
def perf_spice(args) -> None:
    from .selectors.base import budget
    from .selectors.spice import greedy_logdet

    rng = np.random.default_rng(0)
    G = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    G /= np.sqrt(args.dim)
    k = budget(args.ratio, args.n)
    rss0 = peak_rss_mib()
    t = time.perf_counter()
    picks = greedy_logdet(G, k, block=args.block)
    sec = time.perf_counter() - t
    result = {"what": "spice", "n": args.n, "dim": args.dim, "k": k, "block": args.block,
              "seconds": sec, "picked": len(picks), "peak_rss_mib": peak_rss_mib(),
              "rss_before_greedy_mib": rss0, "gradient_matrix_mib": G.nbytes / 2**20,
              "machine": _machine()}
    _write(Path(args.out), "spice", result, {
        "N": args.n, "d": args.dim, "k": k, "seconds": f"{sec:.1f}",
        "peak RSS MiB": f"{peak_rss_mib():.0f}", "G MiB": f"{G.nbytes / 2**20:.0f}"})


def perf_grads(args) -> None:
    from .selectors.base import budget, rank_by_score
    from .selectors.grads import kde_band_scores, zscore

    rng = np.random.default_rng(0)
    sig = [rng.lognormal(0, 0.5, args.n) for _ in range(2)]
    t = time.perf_counter()
    combined = np.mean([zscore(s) for s in sig], axis=0)
    scores, _ = kde_band_scores(combined)
    rank_by_score(scores, 0)[: budget(args.ratio, args.n)]
    sec = time.perf_counter() - t
    result = {"what": "grads", "n": args.n, "seconds": sec, "peak_rss_mib": peak_rss_mib(),
              "note": "selection step only (signals come from the gradient pass)",
              "machine": _machine()}
    _write(Path(args.out), "grads", result, {"N": args.n, "selection seconds": f"{sec:.2f}",
                                              "peak RSS MiB": f"{peak_rss_mib():.0f}"})


def main(what: str, rest: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"bench perf {what}")
    p.add_argument("--out", default="perf", help="folder for <what>.json and <what>.md")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--proxy", default="smollm2-135m-instruct")
    p.add_argument("--n", type=int, default={"gsnr": 64, "ifd": 64, "spice": 52002, "grads": 52002}[what])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256 if what == "gsnr" else 1024)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--dim", type=int, default=8192)
    p.add_argument("--ratio", type=float, default=0.05)
    p.add_argument("--block", type=int, default=64)
    args = p.parse_args(rest)
    {"gsnr": perf_gsnr, "ifd": perf_ifd, "spice": perf_spice, "grads": perf_grads}[what](args)
    return 0
