"""Answer generation: backend ``hf`` (transformers, batched, left padding; the CPU default)
or ``vllm`` (GPU; LoRA adapters through LoRARequest; imported only when used).
Decoding is pinned by :class:`selbench.config.GenerateConfig` (greedy when temperature 0)
and recorded in the stage folder's config.yaml."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import GenerateConfig
from ..templates import format_prompt


def generate_hf(model, tokenizer, prompts: list[str], cfg: GenerateConfig,
                progress: bool = True, desc: str = "generate") -> list[str]:
    import torch
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"
    dev = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # less padding
    out: list[str] = [""] * len(prompts)
    torch.manual_seed(cfg.seed)
    gen_kw = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    if cfg.temperature > 0:
        gen_kw.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
    else:
        gen_kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress) as bar:
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(dev)
            with torch.no_grad():
                ids = model.generate(**enc, **gen_kw)
            for j, i in enumerate(idx):
                out[i] = tokenizer.decode(ids[j, enc["input_ids"].shape[1]:],
                                          skip_special_tokens=True).strip()
            bar.update(len(idx))
    return out


def generate_vllm(base_model: str, adapter: Path | None, prompts: list[str],
                  cfg: GenerateConfig, max_lora_rank: int = 64) -> list[str]:
    from vllm import LLM, SamplingParams  # heavy, GPU only

    kwargs = {"enable_lora": True, "max_lora_rank": max_lora_rank} if adapter else {}
    llm = LLM(model=base_model, seed=cfg.seed, **kwargs)
    sp = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p if cfg.temperature > 0 else 1.0,
                        max_tokens=cfg.max_new_tokens, seed=cfg.seed)
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("selbench", 1, str(adapter))
    outs = llm.generate(prompts, sp, lora_request=lora)
    return [o.outputs[0].text.strip() for o in outs]


def write_answers(folder: Path, eval_set: str, items: list[dict], answers: list[str]) -> None:
    with (folder / f"{eval_set}.jsonl").open("w", encoding="utf-8") as f:
        for it, a in zip(items, answers):
            f.write(json.dumps({**it, "answer": a}, ensure_ascii=False) + "\n")


def read_answers(folder: Path, eval_set: str) -> list[dict]:
    with (folder / f"{eval_set}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def eval_prompts(items: list[dict], template: str, tokenizer) -> list[str]:
    return [format_prompt(it["prompt"], "", template, tokenizer) for it in items]
