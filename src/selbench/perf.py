"""`bench perf gsnr|gsnr-record|ifd|spice|spice-logdet|grads`: speed/memory benchmarks written to <out>/<what>.json
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
    """The released SPICE loop (``spice``) on the embedded proxy: windows/s and examples/s of
    the whole loop (batched per-example gradients + window selection + the proxy's AdamW
    step), then, on one window at the same weights, batched per-example gradients vs the
    reference's batch-size-1 autograd loop (time and max relative difference, dropout off
    so that both compute the same gradients)."""
    import torch

    from .data import Pool
    from .models import load_model, load_tokenizer, pick_device
    from .selectors.base import SelectionContext
    from .selectors.spice import (Spice, SpiceConfig, attach_lora, reference_window_gradients,
                                  tokenize_rows, window_gradients)

    dev = pick_device(args.device)
    n = args.windows * args.pool_size
    rows = _pool_rows(n, args.data_dir)
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
              "peak_rss_mib": peak_rss_mib(), "machine": _machine()}
    _write(Path(args.out), "spice", result, {
        "device": dev, "mode": args.mode, "windows x pool": f"{args.windows} x {args.pool_size}",
        "batch": args.batch_size, "max len": args.max_length,
        "windows/s": f"{result['windows_per_s']:.4f}", "ex/s (loop)": f"{result['examples_per_s']:.2f}",
        "batched grads ex/s": f"{len(data) / batched_s:.2f}",
        "bs1 loop ex/s": f"{len(data) / bs1_s:.2f}", "speedup": f"{bs1_s / batched_s:.2f}x",
        "max rel diff": f"{rel:.1e}", "peak RSS MiB": f"{peak_rss_mib():.0f}"})


def perf_spice_logdet(args) -> None:
    """``spice-logdet``'s greedy on synthetic Gaussian projected gradients (N x d)."""
    from .selectors.base import budget
    from .selectors.spice_logdet import greedy_logdet

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
              "machine": _machine()}
    _write(Path(args.out), "spice-logdet", result, {
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


# --------------------------------------------------------------------------- generate
def perf_generate(args) -> None:
    """hf vs vllm answer generation on the same prompts and settings (greedy, float32 on a
    CPU): prompts/s and new tokens/s, the vLLM engine start separately, through the base
    model and through a LoRA adapter (r8 q/k/v, random non-zero B; the smoke run generates
    with adapters: hf merges it, vLLM applies it per request), and token-level agreement."""
    import math
    import os
    import shutil
    import tempfile

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from .benchmark.generate import (VLLMEngine, close_engines, encode_prompts, eval_prompts,
                                     generate_hf_ids, require_vllm)
    from .config import GenerateConfig
    from .data import load_eval_set
    from .models import load_model, load_tokenizer, pick_device, resolve_model

    require_vllm()
    dev = pick_device(args.device)
    sets = [load_eval_set(es, args.data_dir) for es in ("wizardlm", "vicuna")]
    k = math.ceil(args.n / 2)  # like the smoke run: the first k prompts of each set ...
    items = sets[0][:k] + sets[1][:k] + [it for s in sets for it in s[k:]]  # ... then the rest
    items = items[:args.n]
    tok = load_tokenizer(args.proxy, padding_side="left")
    prompts = eval_prompts(items, "alpaca", tok)
    hcfg = GenerateConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          dtype=args.dtype)
    vcfg = GenerateConfig(backend="vllm", max_new_tokens=args.max_new_tokens, dtype=args.dtype,
                          kv_cache_gb=args.kv_cache_gb)
    adapter = Path(tempfile.mkdtemp(prefix="selbench-perf-lora-"))
    torch.manual_seed(0)
    pm = get_peft_model(load_model(args.proxy, "cpu"), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False))
    pm.save_pretrained(adapter)
    del pm

    def cpu_s() -> float:  # CPU seconds of this process and its children (vLLM's engine)
        import psutil

        procs = [psutil.Process()]
        procs += procs[0].children(recursive=True)
        total = 0.0
        for pr in procs:
            try:
                c = pr.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total

    def timed(fn):
        c, t = cpu_s(), time.perf_counter()
        ids = fn()
        sec, cpu = time.perf_counter() - t, cpu_s() - c
        ntok = sum(len(x) for x in ids)
        # on a shared machine wall time depends on the load; tokens per CPU-second less so
        return ids, {"seconds": sec, "prompts_per_s": len(ids) / sec, "tokens_per_s": ntok / sec,
                     "new_tokens": ntok, "cpu_seconds": cpu, "tokens_per_cpu_s": ntok / max(cpu, 1e-9)}

    if args.threads:  # hf's torch threads (vLLM's CPU worker binds its own: 1 of 2 cores here)
        torch.set_num_threads(args.threads)
    res: dict = {"hf": {}, "vllm": {}}
    ids: dict = {}
    # hf runs the merged LoRA model (as the pipeline does): the same cost as the base model
    m = PeftModel.from_pretrained(load_model(args.proxy, dev), str(adapter)).merge_and_unload()
    ids[("hf", "lora")], res["hf"]["lora"] = timed(
        lambda: generate_hf_ids(m.eval(), tok, prompts, hcfg, progress=False))
    del m
    t = time.perf_counter()
    eng = VLLMEngine.get(resolve_model(args.proxy), vcfg, max_lora_rank=8, device=dev)
    res["vllm"]["engine_start_s"] = time.perf_counter() - t
    pids = encode_prompts(tok, prompts)
    t = time.perf_counter()
    eng.generate_ids(pids[:1], vcfg, adapter)  # first LoRA request loads the adapter
    res["vllm"]["first_lora_request_s"] = time.perf_counter() - t
    for which in ("base", "lora"):
        ids[("vllm", which)], res["vllm"][which] = timed(
            lambda: eng.generate_ids(pids, vcfg, adapter if which == "lora" else None))
    engine_kwargs = dict(eng.kwargs)
    close_engines()
    shutil.rmtree(adapter, ignore_errors=True)
    same = sum(a == b for a, b in zip(ids[("hf", "lora")], ids[("vllm", "lora")])) / len(prompts)
    # `bench run` generates two LoRA models (full-data and subset): one engine serves both
    two_hf = 2 * res["hf"]["lora"]["seconds"]
    two_vllm = res["vllm"]["engine_start_s"] + 2 * res["vllm"]["lora"]["seconds"]
    result = {"what": "generate", "model": args.proxy, "device": dev, "n_prompts": len(prompts),
              "max_new_tokens": args.max_new_tokens, "hf_batch_size": args.batch_size,
              "dtype": engine_kwargs["dtype"], "greedy": True, "results": res,
              "identical_token_ids_fraction_lora": same,
              "two_lora_models_seconds": {"hf": two_hf, "vllm_incl_engine_start": two_vllm},
              "vllm_engine_kwargs": engine_kwargs,
              "vllm_env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_")},
              "torch_threads_hf": torch.get_num_threads(), "load_average": os.getloadavg(),
              "peak_rss_mib": peak_rss_mib(),
              "machine": _machine()}
    f = lambda r: f"{r['prompts_per_s']:.2f} / {r['tokens_per_s']:.0f}"  # noqa: E731
    _write(Path(args.out), "generate", result, {
        "device": dev, "prompts": len(prompts), "max new tok": args.max_new_tokens,
        "dtype": engine_kwargs["dtype"], "hf threads": torch.get_num_threads(),
        "hf LoRA prompts/s / tok/s": f(res["hf"]["lora"]), "vllm base": f(res["vllm"]["base"]),
        "vllm LoRA": f(res["vllm"]["lora"]),
        "vllm engine start s": f"{res['vllm']['engine_start_s']:.0f}",
        "tok/CPU-s hf / vllm (LoRA)": f"{res['hf']['lora']['tokens_per_cpu_s']:.0f} / "
                                      f"{res['vllm']['lora']['tokens_per_cpu_s']:.0f}",
        "identical ids (LoRA)": f"{same:.2f}",
        "2 LoRA models s, hf / vllm+start": f"{two_hf:.0f} / {two_vllm:.0f}"})


# --------------------------------------------------------------------------- gsnr-record
def perf_gsnr_record(args) -> None:
    """G-SNR's two recording points on the same trained ensemble: norms taken during the
    updates (`record: train`, free) vs in a separate eval-mode pass at theta_e (`record:
    pass`, eqs. 1-2). Rank agreement of the utilities and overlap of the top fractions."""
    from .gradients import ProfileConfig
    from .models import pick_device
    from .selectors.gsnr import record_agreement

    rows = _pool_rows(args.n, args.data_dir)
    prof = ProfileConfig(proxy=args.proxy, members=args.members, epochs=2, batch_size=args.batch_size,
                         max_length=args.max_length, seed=0)
    res = record_agreement(rows, prof, pick_device(args.device))
    res["machine"] = _machine()
    _write(Path(args.out), "gsnr-record", res, {
        "proxy": args.proxy, "N": res["n"], "M x E": f"{res['members']} x {res['epochs']}",
        "max_len": res["max_length"], "spearman(utility)": f"{res['spearman_utility']:.3f}",
        "spearman(norms) mean": f"{res['spearman_norms_mean']:.3f}",
        "top 5% overlap": f"{res['top0.05_overlap']:.2f} (k={res['top0.05_k']})",
        "top 10% overlap": f"{res['top0.1_overlap']:.2f} (k={res['top0.1_k']})",
        "wall s": f"{res['wall_seconds']:.0f}"})


def main(what: str, rest: list[str]) -> int:
    if what == "scale":  # IFD and profile throughput with 1 and N processes
        from .perf_scale import main as scale_main

        return scale_main(rest)
    p = argparse.ArgumentParser(prog=f"bench perf {what}")
    p.add_argument("--out", default="perf", help="folder for <what>.json and <what>.md")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--proxy", default="smollm2-135m-instruct")
    p.add_argument("--members", type=int, default=3, help="gsnr-record: ensemble members")
    p.add_argument("--n", type=int, default={"gsnr": 64, "gsnr-record": 100, "ifd": 64, "spice": 256,
                                             "spice-logdet": 52002, "grads": 52002, "generate": 20}[what])
    p.add_argument("--batch-size", type=int, default=8 if what == "spice" else 16)
    p.add_argument("--max-length", type=int, default={"gsnr": 256, "spice": 256, "gsnr-record": 128}.get(what, 1024))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--dim", type=int, default=8192)
    p.add_argument("--ratio", type=float, default=0.05)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--windows", type=int, default=2, help="spice: windows of the released loop")
    p.add_argument("--pool-size", type=int, default=128, help="spice: candidates per window")
    p.add_argument("--mode", default="top_k", help="spice: top_k | conflict_penalty")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generate")
    p.add_argument("--dtype", default="auto", help="generate: auto = float32 on a CPU")
    p.add_argument("--kv-cache-gb", type=float, default=None, help="generate: vLLM KV cache")
    p.add_argument("--threads", type=int, default=None, help="generate: hf torch threads")
    args = p.parse_args(rest)
    {"gsnr": perf_gsnr, "ifd": perf_ifd, "spice": perf_spice, "spice-logdet": perf_spice_logdet,
     "grads": perf_grads, "generate": perf_generate, "gsnr-record": perf_gsnr_record}[what](args)
    return 0
