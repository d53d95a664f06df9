"""Shared fixtures: tiny randomly initialised models built in-process, the real data dir."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests never reach the hub (the CI machine has no internet): fail fast, offline
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SELBENCH_DATA_DIR") or REPO.parent / "shared" / "data")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_gpu = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "api" in item.keywords and not os.environ.get("OPENAI_API_KEY"):
            item.add_marker(pytest.mark.skip(reason="needs OPENAI_API_KEY"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED / "train" / "alpaca_data.json").exists():
        pytest.skip(f"shared data not found at {SHARED} (set SELBENCH_DATA_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def tokenizer():
    from selbench.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def make_tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(cfg).float().eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> str:
    """A tiny random LLaMA with the SmolLM2 tokenizer, saved as a local model folder."""
    d = tmp_path_factory.mktemp("tiny-llama")
    model = make_tiny_llama(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture
def tiny_pool_rows():
    import random

    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rows = []
    for i in range(24):
        inst = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        out = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
        inp = " ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) if i % 3 == 0 else ""
        rows.append({"id": f"r{i}", "instruction": f"{inst} {i}", "input": inp, "output": out})
    return rows
