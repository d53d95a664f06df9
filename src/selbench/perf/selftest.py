"""`bench selftest --device cuda`: prove the CUDA path in minutes, on the embedded models, with
no hub. Each check is timed and written to ``<out>/selftest.json`` (and a markdown row):

1. the device: GPUs, their names and memory, bf16 support, precision ``auto``;
2. bf16 LoRA training and bf16 full fine-tuning (a few steps of the real harness);
3. a 2-rank launch (torchrun, 2 GPUs) of the same training when two GPUs are visible: each
   rank on its own GPU;
4. per-example LoRA gradient norms on the device equal the CPU's (fp32, TF32 off) within
   a relative 1e-4;
5. batched IFD scoring vs the reference batch-size-1 loop: speed-up and agreement;
6. vLLM generation with a LoRA adapter when vLLM is installed: greedy answers equal to hf's
   (token ids) in fp32, and the share of equal answers in bf16.

On a machine without CUDA, ``--device cuda`` says so and exits 0 without running anything;
``--device cpu`` runs the same checks on the CPU (that is how the script itself is tested).
"""
from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from pathlib import Path

from ..benchmark.generate import VLLMEngine, close_engines, encode_prompts, generate_hf_ids
from ..benchmark.train import train_model
from ..config import GenerateConfig, LaunchConfig, TrainConfig, to_dict
from ..data import load_pool
from ..hardware import cuda_available, resolve_precision
from ..launch import run_workers, write_job_rows
from ..models import default_lora_targets, load_model, load_tokenizer, resolve_model
from ..selectors.ifd import ifd_scores, reference_ifd_scores
from ..selectors.proxy.config import ProfileConfig
from ..selectors.proxy.pergrad import per_example_lora_grad_norms
from ..selectors.proxy.profile import attach_members
from ..selectors.proxy.scoring import collate, tokenize_pool
from .common import BENCHMARKS, Benchmark, machine, write_result

TOLERANCE = 1e-4  # relative, per-example norms device vs CPU in fp32 with TF32 off


def _rows(args, n: int) -> list[dict]:
    try:
        return load_pool("alpaca", args.data_dir, size=n, seed=0).rows
    except Exception:  # noqa: BLE001 - no data dir: a few synthetic rows do for the CUDA path
        return [{"id": str(i), "instruction": f"Name {i} colours.", "input": "",
                 "output": " ".join(["red", "green", "blue", "teal"][: 1 + i % 4])} for i in range(n)]


def _timed(name: str, fn, results: dict) -> None:
    t = time.perf_counter()
    try:
        out = fn() or {}
        results[name] = {"ok": True, "seconds": round(time.perf_counter() - t, 2), **out}
    except Exception as e:  # noqa: BLE001 - every check reports; the run goes on
        results[name] = {"ok": False, "seconds": round(time.perf_counter() - t, 2),
                         "error": f"{type(e).__name__}: {str(e)[:300]}"}


def check_device(device: str) -> dict:
    import torch  # lazy: heavy

    out = {"device": device, "precision_auto": resolve_precision("auto", device)}
    if device.startswith("cuda"):
        out["gpus"] = [{"name": torch.cuda.get_device_name(i),
                        "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
                       for i in range(torch.cuda.device_count())]
        out["bf16"] = bool(torch.cuda.is_bf16_supported())
    return out


def check_training(model: str, rows: list[dict], device: str, method: str, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        info = train_model(model, rows, TrainConfig(method=method, max_steps=3, batch_size=4,
                                                    max_length=128, learning_rate=1e-4,
                                                    warmup_ratio=0.0, precision=precision),
                           Path(d), device, progress=False, precision=precision)
    assert info["final_loss"] is not None and info["final_loss"] == info["final_loss"]
    return {"steps": info["steps"], "final_loss": info["final_loss"], "precision": precision,
            "train_seconds": round(info["seconds"], 2)}


def check_launch(model: str, rows: list[dict], precision: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        job = Path(d) / "job"
        write_job_rows(job / "rows.jsonl", rows)
        cfg = TrainConfig(max_steps=3, batch_size=2, max_length=128, warmup_ratio=0.0,
                          precision=precision)
        out = Path(d) / "out"
        out.mkdir()
        run_workers("train", {"model": model, "rows_file": str(job / "rows.jsonl"),
                              "train": to_dict(cfg), "out": str(out), "device": "cuda",
                              "precision": precision, "processes": 2, "report_to": []},
                    LaunchConfig("torchrun", 2, stages=["train"]), job, log=lambda m: None)
        info = json.loads((out / "train.json").read_text())
    return {"processes": 2, "steps": info["steps"], "effective_batch": info["effective_batch"]}


def check_norms(model: str, rows: list[dict], device: str) -> dict:
    import torch  # lazy: heavy

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tok = load_tokenizer(model)
    data = tokenize_pool(rows[:8], tok, "alpaca", 128)
    norms = {}
    for dev in ("cpu", device):
        m = load_model(model, dev, "fp32")
        for p in m.parameters():
            p.requires_grad_(False)
        pm = attach_members(m, ProfileConfig(proxy=model, members=1), default_lora_targets(m), seed=0)
        with torch.no_grad():  # B = 0 at init: give the adapter weights so both halves count
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.linspace(-0.01, 0.01, p.numel()).reshape(p.shape))
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)
        norms[dev] = per_example_lora_grad_norms(pm, collate(data, tok.pad_token_id, dev)).double().cpu()
    rel = float(((norms[device] - norms["cpu"]).abs() / norms["cpu"].abs().clamp(min=1e-12)).max())
    assert rel <= TOLERANCE, f"max relative difference {rel:.2e} > {TOLERANCE}"
    return {"examples": len(data), "max_rel_diff": rel, "tolerance": TOLERANCE}


def check_ifd(model: str, rows: list[dict], device: str) -> dict:
    tok = load_tokenizer(model)
    m = load_model(model, device, "fp32").eval()
    t = time.perf_counter()
    fast = ifd_scores(m, tok, rows, 256, 16)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_ifd_scores(m, tok, rows, 256)
    t_ref = time.perf_counter() - t
    rel = max(abs(a["ifd"] - b["ifd"]) / max(abs(b["ifd"]), 1e-12) for a, b in zip(fast, ref)
              if b["ifd"] == b["ifd"] and a["ifd"] == a["ifd"])
    return {"examples": len(rows), "batched_s": round(t_fast, 2), "batch1_s": round(t_ref, 2),
            "speedup": round(t_ref / max(t_fast, 1e-9), 2), "max_rel_diff": rel}


def check_vllm(model: str, rows: list[dict], device: str) -> dict:
    import torch  # lazy: heavy
    from peft import LoraConfig, get_peft_model  # lazy: heavy

    tok = load_tokenizer(model, padding_side="left")
    prompts = [f"### Instruction:\n{r['instruction']}\n\n### Response:\n" for r in rows[:8]]
    out = {}
    with tempfile.TemporaryDirectory() as d:
        base = load_model(model, "cpu", "fp32")
        torch.manual_seed(0)
        pm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=default_lora_targets(base)))
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        pm.save_pretrained(d)
        merged = pm.merge_and_unload().to(device).eval()
        for dtype in ("float32", "bfloat16"):
            cfg = GenerateConfig(backend="vllm", max_new_tokens=32, dtype=dtype, kv_cache_gb=1,
                                 max_model_len=1024, gpu_memory_utilization=0.3)
            hcfg = GenerateConfig(max_new_tokens=32, dtype=dtype, batch_size=8)
            hf = generate_hf_ids(merged, tok, prompts, hcfg, progress=False)
            t = time.perf_counter()
            eng = VLLMEngine.get(resolve_model(model), cfg, max_lora_rank=8, device=device)
            start = time.perf_counter() - t
            t = time.perf_counter()
            v = eng.generate_ids(encode_prompts(tok, prompts), cfg, d)
            out[dtype] = {"equal_answers": sum(a == b for a, b in zip(hf, v)) / len(prompts),
                          "engine_start_s": round(start, 1),
                          "generate_s": round(time.perf_counter() - t, 2)}
            close_engines()
    assert out["float32"]["equal_answers"] == 1.0, f"fp32 greedy answers differ: {out}"
    return out


def run_checks(args) -> dict:
    device = args.device
    model = args.model
    resolve_model(model)  # convert an embedded model once, outside the timings
    rows = _rows(args, 32)
    prec = "bf16" if device.startswith("cuda") else resolve_precision("auto", device)
    res: dict = {}
    _timed("device", lambda: check_device(device), res)
    _timed("train_lora", lambda: check_training(model, rows[:16], device, "lora", prec), res)
    _timed("train_full", lambda: check_training(model, rows[:16], device, "full", prec), res)
    if device.startswith("cuda"):
        import torch  # lazy: heavy

        if torch.cuda.device_count() >= 2:
            _timed("launch_2_ranks", lambda: check_launch(model, rows[:16], prec), res)
        else:
            res["launch_2_ranks"] = {"ok": None, "skipped": "one GPU visible"}
    _timed("per_example_norms_vs_cpu", lambda: check_norms(model, rows, device), res)
    _timed("ifd_batched_vs_batch1", lambda: check_ifd(model, rows, device), res)
    if importlib.util.find_spec("vllm") is not None and (device.startswith("cuda") or args.vllm):
        _timed("vllm_lora_vs_hf", lambda: check_vllm(model, rows, device), res)
    else:
        res["vllm_lora_vs_hf"] = {"ok": None, "skipped": "vLLM not installed" if
                                  importlib.util.find_spec("vllm") is None else "CPU run (--vllm to include)"}
    return res


def run(args) -> None:
    if args.device.startswith("cuda") and not cuda_available():
        print("bench selftest: no CUDA device is visible here: nothing was run (this check "
              "proves the CUDA path on a GPU machine; --device cpu runs it on the CPU)")
        return
    t = time.perf_counter()
    res = run_checks(args)
    total = time.perf_counter() - t
    failed = [k for k, v in res.items() if v.get("ok") is False]
    result = {"what": "selftest", "device": args.device, "model": args.model, "checks": res,
              "total_seconds": round(total, 1), "failed": failed, "machine": machine()}
    row = {"device": args.device, "total s": f"{total:.0f}",
           **{k: ("ok" if v.get("ok") else "skipped" if v.get("ok") is None else "FAILED")
                 + (f" {v['seconds']}s" if v.get("seconds") is not None else "")
              for k, v in res.items()}}
    write_result(Path(args.out), f"selftest-{args.device.split(':')[0]}", result, row)
    if failed:
        raise SystemExit(f"selftest: {len(failed)} check(s) failed: {', '.join(failed)}")


def add_args(p) -> None:
    p.add_argument("--device", default="cuda", help="cuda (the GPU check) or cpu (the same checks on the CPU)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="embedded model or a local folder")
    p.add_argument("--vllm", action="store_true", help="include the vLLM check on a CPU run")


BENCHMARKS.add("selftest", Benchmark(run, __doc__.splitlines()[0], {"add_args": add_args}))
