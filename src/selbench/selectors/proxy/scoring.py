"""Causal-LM scoring shared by the proxy selectors: tokenized pools, right-padded batches,
per-example mean token losses with the LM head applied only at scored positions."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...templates import tokenize_example

if TYPE_CHECKING:  # annotations only
    import torch


def tokenize_pool(rows: list[dict], tokenizer, template: str, max_length: int) -> list[dict]:
    return [tokenize_example(tokenizer, r, template, max_length) for r in rows]


def collate(examples: list[dict], pad_id: int, device) -> dict:
    """Right padding; labels -100 on padding."""
    import torch  # lazy: heavy (see the package docstring)
    n = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    lab = torch.full((len(examples), n), -100, dtype=torch.long)
    att = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        L = len(e["input_ids"])
        ids[i, :L] = torch.tensor(e["input_ids"])
        lab[i, :L] = torch.tensor(e["labels"])
        att[i, :L] = 1
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "labels": lab.to(device)}


def per_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over each example's scored (label != -100) tokens -> [B]."""
    import torch.nn.functional as F  # lazy: heavy
    logits = logits[:, :-1].float()
    tgt = labels[:, 1:]
    mask = tgt != -100
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.clamp(min=0).reshape(-1),
                         reduction="none").view_as(tgt)
    return (ce * mask).sum(1) / mask.sum(1).clamp(min=1)


def decoder_and_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = base.get_decoder() if hasattr(base, "get_decoder") else None
    if dec is None:
        dec = getattr(base, "model", None) or getattr(base, "transformer", None)
    return base, dec, base.get_output_embeddings()


def scored_logits(base, head, h: torch.Tensor, labels: torch.Tensor, bf16: bool = False):
    """The LM head applied only at scored positions (labels[:, 1:] != -100: token t is
    predicted from position t-1). Returns (hidden states, fp32 logits with the model's
    final soft-cap if any, targets, mask [B, T-1])."""
    import torch  # lazy: heavy (see the package docstring)
    tgt = labels[:, 1:]
    mask = tgt != -100
    hs = h[:, :-1][mask]
    with torch.autocast(device_type=hs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = head(hs)
    logits = logits.float()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return hs, logits, tgt[mask], mask


def row_sums(values: torch.Tensor, mask: torch.Tensor, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of `values` (one per True in `mask`, row-major) and per-row counts."""
    import torch  # lazy: heavy (see the package docstring)
    rows = mask.nonzero()[:, 0]
    tot = torch.zeros(mask.size(0), device=values.device, dtype=dtype or values.dtype)
    return tot.index_add(0, rows, values.to(tot.dtype)), mask.sum(1)


def scored_losses(model, batch: dict, autocast_bf16: bool = False) -> torch.Tensor:
    """Per-example mean token loss, applying the LM head only at scored positions.

    Same value as ``per_example_losses(model(...).logits, labels)`` but skips the
    vocabulary projection for prompt and padding tokens (most of the LM-head cost)."""
    import torch  # lazy: heavy (see the package docstring)
    import torch.nn.functional as F  # lazy: heavy
    base, dec, head = decoder_and_head(model)
    with torch.autocast(device_type=batch["input_ids"].device.type, dtype=torch.bfloat16,
                        enabled=autocast_bf16):
        h = dec(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    _, logits, tgt, mask = scored_logits(base, head, h, batch["labels"], autocast_bf16)
    tot, cnt = row_sums(F.cross_entropy(logits, tgt, reduction="none"), mask)
    return tot / cnt.clamp(min=1)
