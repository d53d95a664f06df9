"""Embedded models: both GGUF packages load as ordinary trainable transformers models."""
import pytest
import torch

from selbench.models import (EMBEDDED_MODELS, default_lora_targets, embedded_gguf, load_model,
                             load_tokenizer)
from selbench.selectors.proxy.config import ProfileConfig
from selbench.selectors.proxy.pergrad import per_example_lora_grad_norms
from selbench.selectors.proxy.profile import attach_members, member_params
from selbench.selectors.proxy.scoring import collate
from selbench.templates import tokenize_example


@pytest.mark.slow
@pytest.mark.parametrize("name", EMBEDDED_MODELS.names())
def test_embedded_model_loads_generates_and_gives_lora_gradients(name):
    try:
        embedded_gguf(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    tok = load_tokenizer(name)
    model = load_model(name)
    assert model.hf_quantizer is None if hasattr(model, "hf_quantizer") else True
    enc = tok(["The capital of France is"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4
    for p in model.parameters():
        p.requires_grad_(False)
    pm = attach_members(model, ProfileConfig(members=1), default_lora_targets(model))
    pm.base_model.set_adapter("m0")
    for p in member_params(pm, "m0"):
        p.requires_grad_(True)
    rows = [{"instruction": "Say hi.", "input": "", "output": "Hi there!"},
            {"instruction": "Add 2 and 2.", "input": "", "output": "2 + 2 = 4."}]
    batch = collate([tokenize_example(tok, r, "alpaca", 64) for r in rows], tok.pad_token_id, "cpu")
    norms = per_example_lora_grad_norms(pm, batch)
    assert norms.shape == (2,) and torch.all(norms > 0) and torch.all(torch.isfinite(norms))
