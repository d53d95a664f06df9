"""Per-example gradients from one batched backward.

For a linear map y_t = W x_t with output gradient d_t, example i's weight gradient is
G_i = sum_t d_t x_t^T (sum over i's tokens): forward hooks on the LoRA A and B layers keep
x_t, tensor hooks keep d_t, and one einsum per layer gives every example's gradient. The
batch backward must be of the *sum* of per-example mean losses, so each example's slice is
exactly its own gradient; right padding with labels -100 leaves real tokens untouched.
The input-embedding and LM-head norms use the Gram identity instead (no V x H gradient per
example is ever materialised)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .scoring import decoder_and_head, row_sums, scored_logits, scored_losses

if TYPE_CHECKING:  # annotations only
    import torch


def lora_modules(model, adapter: str | None = None) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(name, lora_A, lora_B) for every LoRA layer of the active (or given) adapter."""
    import torch  # lazy: heavy (see the package docstring)
    out = []
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and hasattr(mod, "lora_B") and isinstance(mod.lora_A, torch.nn.ModuleDict):
            names = [adapter] if adapter else list(getattr(mod, "active_adapters", [])) or list(mod.lora_A.keys())
            for a in names:
                if a in mod.lora_A:
                    out.append((f"{name}.{a}", mod.lora_A[a], mod.lora_B[a]))
    if not out:
        raise ValueError("model has no LoRA layers (expected a PEFT LoRA model)")
    return out


class PerExampleGrads:
    """Context manager: hooks that capture per-example LoRA gradients of the next backward.

    After ``loss.backward()`` inside the context, :meth:`collect` returns, per captured linear
    layer, the per-example weight gradients ``[B, out, in]`` (same order as the module's
    ``weight``), computed as ``einsum('bto,bti->boi', d, x)``.
    """

    def __init__(self, model, adapter: str | None = None):
        import torch  # lazy: heavy (see the package docstring)
        self.layers = []
        for _, a, b in lora_modules(model, adapter):
            self.layers += [a, b]
        self._handles: list = []
        self._x: dict[int, torch.Tensor] = {}
        self._g: dict[int, torch.Tensor] = {}

    def __enter__(self):
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._make_hook(i)))
        return self

    def _make_hook(self, i: int):
        def hook(module, inputs, output):
            self._x[i] = inputs[0].detach()
            if output.requires_grad:
                def grad_hook(g, i=i):
                    self._g[i] = g.detach()
                output.register_hook(grad_hook)
        return hook

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self) -> None:
        self._x.clear()
        self._g.clear()

    def collect(self) -> list[torch.Tensor]:
        import torch  # lazy: heavy (see the package docstring)
        grads = []
        for i in range(len(self.layers)):
            if i not in self._g:
                raise RuntimeError("no gradient captured: call backward() inside the context")
            x, g = self._x[i].float(), self._g[i].float()
            if x.dim() == 2:
                x, g = x.unsqueeze(1), g.unsqueeze(1)
            grads.append(torch.einsum("bto,bti->boi", g, x))
        return grads

    def norms(self) -> torch.Tensor:
        sq = None
        for G in self.collect():
            s = G.pow(2).sum(dim=(1, 2))
            sq = s if sq is None else sq + s
        return sq.sqrt()


def per_example_lora_grad_norms(model, batch: dict) -> torch.Tensor:
    """L2 norm of each example's own mean-token-loss gradient w.r.t. the trainable LoRA
    parameters, at the model's current weights. Leaves parameter ``.grad`` untouched."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    with PerExampleGrads(model) as cap:
        losses = scored_losses(model, batch)
        losses.sum().backward()
        norms = cap.norms()
    for p, g in zip(params, saved):
        p.grad = g
    return norms.detach()


def per_example_embedding_head_norms(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example gradient norms of the input-embedding matrix and of the LM head.

    Uses the Gram identity ||sum_t d_t x_t^T||_F^2 = sum_{t,t'} (d_t . d_t')(x_t . x_t')
    so no per-example V x H gradient is ever materialised:
    - embedding: x_t = one-hot(token_t), d_t = dL/d(input embedding at t), so the Gram of x
      is "same token"; every real (unpadded) token counts;
    - LM head: x_t = final hidden state h_t, d_t = dL/dlogits_t = (softmax - onehot)/n at the
      n scored positions. With tied embeddings these are the two uses of the shared matrix,
      reported separately (as if untied).
    """
    import torch  # lazy: heavy (see the package docstring)
    import torch.nn.functional as F  # lazy: heavy
    base, dec, head = decoder_and_head(model)
    emb_layer = base.get_input_embeddings()
    ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    B = ids.size(0)
    emb = emb_layer(ids).detach().requires_grad_(True)
    h = dec(inputs_embeds=emb, attention_mask=att).last_hidden_state
    hs, logits, tgt, mask = scored_logits(base, head, h, labels)
    tot, cnt = row_sums(F.cross_entropy(logits, tgt, reduction="none"), mask)
    cnt = cnt.clamp(min=1)
    losses = tot / cnt
    rows = mask.nonzero()[:, 0]
    (d_emb,) = torch.autograd.grad(losses.sum(), emb)
    emb_sq = torch.zeros(B, dtype=torch.float64)
    head_sq = torch.zeros(B, dtype=torch.float64)
    with torch.no_grad():
        gz = torch.softmax(logits, dim=-1)
        gz[torch.arange(len(gz)), tgt] -= 1.0
        gz /= cnt[rows].unsqueeze(1).to(gz.dtype)
        for i in range(B):
            real = att[i].bool()
            D = d_emb[i][real].double()
            same = (ids[i][real].unsqueeze(0) == ids[i][real].unsqueeze(1)).double()
            emb_sq[i] = ((D @ D.T) * same).sum()
            sel = rows == i
            if sel.any():
                Z, H = gz[sel].double(), hs[sel].detach().double()
                head_sq[i] = ((Z @ Z.T) * (H @ H.T)).sum()
    return emb_sq.clamp(min=0).sqrt().float(), head_sq.clamp(min=0).sqrt().float()
