"""`bench perf generate`: Answer generation: hf vs vLLM (base and LoRA), token agreement."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from ..benchmark.generate import (VLLMEngine, close_engines, encode_prompts, eval_prompts,
                                  generate_hf_ids, require_vllm)
from ..config import GenerateConfig
from ..data import load_eval_set
from ..hardware import pick_device
from ..models import load_model, load_tokenizer, resolve_model
from .common import BENCHMARKS, Benchmark, machine, peak_rss_mib, write_result


def run(args) -> None:
    """hf vs vllm answer generation on the same prompts and settings (greedy, float32 on a
    CPU): prompts/s and new tokens/s, the vLLM engine start separately, through the base
    model and through a LoRA adapter (r8 q/k/v, random non-zero B; the smoke run generates
    with adapters: hf merges it, vLLM applies it per request), and token-level agreement."""

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

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
              "machine": machine()}
    f = lambda r: f"{r['prompts_per_s']:.2f} / {r['tokens_per_s']:.0f}"  # noqa: E731
    write_result(Path(args.out), "generate", result, {
        "device": dev, "prompts": len(prompts), "max new tok": args.max_new_tokens,
        "dtype": engine_kwargs["dtype"], "hf threads": torch.get_num_threads(),
        "hf LoRA prompts/s / tok/s": f(res["hf"]["lora"]), "vllm base": f(res["vllm"]["base"]),
        "vllm LoRA": f(res["vllm"]["lora"]),
        "vllm engine start s": f"{res['vllm']['engine_start_s']:.0f}",
        "tok/CPU-s hf / vllm (LoRA)": f"{res['hf']['lora']['tokens_per_cpu_s']:.0f} / "
                                      f"{res['vllm']['lora']['tokens_per_cpu_s']:.0f}",
        "identical ids (LoRA)": f"{same:.2f}",
        "2 LoRA models s, hf / vllm+start": f"{two_hf:.0f} / {two_vllm:.0f}"})


BENCHMARKS.add('generate', Benchmark(run, 'Answer generation: hf vs vLLM (base and LoRA), token agreement.', {'n': 20}))
