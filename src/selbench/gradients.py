"""Gradient profiles: the proxy-model gradient work shared by several selectors.

One frozen backbone carries an ensemble of M LoRA adapters (PEFT). Each member gets its own
initialisation seed and its own data order and minimises its *own* loss (the ensemble loss
is the mean of member losses, never the loss of an averaged prediction). While a member
trains, every batch's backward pass also yields, for free, the gradient of each example's
own mean-token loss w.r.t. that member's LoRA parameters:

    for a linear map y_t = W x_t with output gradient d_t, example i's weight gradient is
    G_i = sum_t d_t x_t^T  (sum over i's tokens),

computed from hooks on the LoRA A and B layers with one einsum per batch. The batch
backward is of the *sum* of per-example mean losses, so each example's slice is exactly its
own gradient; the optimizer then uses the mean (grads divided by the batch size). Right
padding with labels -100 leaves real tokens untouched, so the result is exact.

``record="pass"`` measures what eqs. 1-2 define: g_i^(m,e) at theta_e, the weights after e
epochs, in a separate no-update pass at the end of each epoch with the backbone in eval mode
(dropout off: GPT-2's 0.1 dropout otherwise moves the same example's norm by 3-20%). Every
example then sees the same weights; it costs one extra forward+backward per example and
epoch. ``record="train"`` records ||G_i|| for free from the training backward, at the
weights in force when i's batch comes up during epoch e (so an example's position in the
member's data order enters the ensemble variance) and with dropout as in training. The
README gives the measured agreement of the two rankings on real Alpaca rows.

Optionally a seeded random projection of each flattened per-example gradient is kept
(for SPICE): ``countsketch`` (each coordinate hashed to one of d buckets with a random sign,
an unbiased sparse JL sketch, O(P) per example) or ``gaussian`` / ``rademacher`` dense
matrices (O(P d), generated in chunks from the seed; GPU-sized).
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError, to_dict


# --------------------------------------------------------------------------- per-example grads
def lora_modules(model, adapter: str | None = None) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(name, lora_A, lora_B) for every LoRA layer of the active (or given) adapter."""
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


def per_example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over each example's scored (label != -100) tokens -> [B]."""
    logits = logits[:, :-1].float()
    tgt = labels[:, 1:]
    mask = tgt != -100
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.clamp(min=0).reshape(-1),
                         reduction="none").view_as(tgt)
    return (ce * mask).sum(1) / mask.sum(1).clamp(min=1)


def _decoder_and_head(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = base.get_decoder() if hasattr(base, "get_decoder") else None
    if dec is None:
        dec = getattr(base, "model", None) or getattr(base, "transformer", None)
    return base, dec, base.get_output_embeddings()


def scored_logits(base, head, h: torch.Tensor, labels: torch.Tensor, bf16: bool = False):
    """The LM head applied only at scored positions (labels[:, 1:] != -100: token t is
    predicted from position t-1). Returns (hidden states, fp32 logits with the model's
    final soft-cap if any, targets, mask [B, T-1])."""
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
    rows = mask.nonzero()[:, 0]
    tot = torch.zeros(mask.size(0), device=values.device, dtype=dtype or values.dtype)
    return tot.index_add(0, rows, values.to(tot.dtype)), mask.sum(1)


def scored_losses(model, batch: dict, autocast_bf16: bool = False) -> torch.Tensor:
    """Per-example mean token loss, applying the LM head only at scored positions.

    Same value as ``per_example_losses(model(...).logits, labels)`` but skips the
    vocabulary projection for prompt and padding tokens (most of the LM-head cost)."""
    base, dec, head = _decoder_and_head(model)
    with torch.autocast(device_type=batch["input_ids"].device.type, dtype=torch.bfloat16,
                        enabled=autocast_bf16):
        h = dec(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    _, logits, tgt, mask = scored_logits(base, head, h, batch["labels"], autocast_bf16)
    tot, cnt = row_sums(F.cross_entropy(logits, tgt, reduction="none"), mask)
    return tot / cnt.clamp(min=1)


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


# --------------------------------------------------------------------------- projections
class Projector:
    """Seeded random projection of flattened per-example gradients [B, P] -> [B, d]."""

    def __init__(self, sizes: list[int], dim: int, kind: str = "countsketch", seed: int = 0,
                 device: str = "cpu"):
        self.dim, self.kind, self.sizes = dim, kind, sizes
        self.P = int(sum(sizes))
        gen = torch.Generator().manual_seed(seed)
        if kind == "countsketch":
            self.bucket = torch.randint(0, dim, (self.P,), generator=gen).to(device)
            self.sign = (torch.randint(0, 2, (self.P,), generator=gen) * 2 - 1).float().to(device)
        elif kind in ("gaussian", "rademacher"):
            if self.P * dim > 2_000_000_000:
                raise ValueError(f"dense projection {self.P}x{dim} too large; use countsketch")
            if kind == "gaussian":
                m = torch.randn(self.P, dim, generator=gen)
            else:
                m = torch.randint(0, 2, (self.P, dim), generator=gen).float() * 2 - 1
            self.matrix = (m / math.sqrt(dim)).to(device)
        else:
            raise ValueError(f"unknown projection {kind!r} (countsketch | gaussian | rademacher)")

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        if self.kind == "countsketch":
            out = torch.zeros(flat.size(0), self.dim, device=flat.device)
            out.index_add_(1, self.bucket, flat * self.sign)
            return out
        return flat @ self.matrix


# --------------------------------------------------------------------------- the ensemble
@dataclass
class ProfileConfig:
    """Proxy ensemble + recording settings; the profile cache key is this dataclass."""

    proxy: str = "smollm2-135m-instruct"
    members: int = 5
    epochs: int = 2
    learning_rate: float = 5e-5
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: list[str] | None = None  # None = attention q/k/v (c_attn on GPT-2)
    batch_size: int = 16
    max_length: int = 256
    template: str = "alpaca"
    precision: str = "fp32"  # fp32 | bf16 (autocast; norms 0.2-5% noisy per example)
    record: str = "pass"  # pass (at theta_e, eval mode; eqs. 1-2) | train (free, during updates)
    projection_dim: int = 1024  # projected per-example gradients for SPICE (0 = none)
    projection: str = "countsketch"
    seed: int | None = None  # member inits and data orders; None = the run seed

    def __post_init__(self):
        if self.record not in ("pass", "train"):
            raise ConfigError(f"profile.record must be 'pass' or 'train', got {self.record!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"profile.precision must be 'fp32' or 'bf16', got {self.precision!r}")


def tiny_profile_params(tiny_model: str, **extra) -> dict:
    """Profile settings that make a proxy-based selector cheap in tests (contract test)."""
    return {"profile": {"proxy": tiny_model, "members": 2, "epochs": 2, "batch_size": 4,
                        "max_length": 64, "learning_rate": 1e-2, "projection_dim": 64, **extra}}


@dataclass
class Profile:
    norms: np.ndarray  # [M, E, N] per-example LoRA gradient norms
    losses: np.ndarray  # [M, E, N] per-example losses (same weights as the norms)
    projections: np.ndarray | None  # [N, d] member 0, last epoch
    meta: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, torch.Tensor] | None = None  # member 0's LoRA weights after epoch 1
    train_norms: np.ndarray | None = None  # [M, E, N] during-training norms, when kept

    def save(self, folder: Path) -> None:
        np.save(folder / "norms.npy", self.norms)
        np.save(folder / "losses.npy", self.losses)
        if self.projections is not None:
            np.save(folder / "projections.npy", self.projections)
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2, sort_keys=True))
        if self.snapshot:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self.snapshot.items()},
                      str(folder / "member0_epoch1.safetensors"))

    @classmethod
    def load(cls, folder: Path) -> "Profile":
        proj = folder / "projections.npy"
        snap = folder / "member0_epoch1.safetensors"
        snapshot = None
        if snap.exists():
            from safetensors.torch import load_file

            snapshot = load_file(str(snap))
        return cls(np.load(folder / "norms.npy"), np.load(folder / "losses.npy"),
                   np.load(proj) if proj.exists() else None,
                   json.loads((folder / "meta.json").read_text()), snapshot)


def tokenize_pool(rows: list[dict], tokenizer, template: str, max_length: int) -> list[dict]:
    from .templates import tokenize_example

    return [tokenize_example(tokenizer, r, template, max_length) for r in rows]


def collate(examples: list[dict], pad_id: int, device) -> dict:
    """Right padding; labels -100 on padding."""
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


def bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random,
                     chunk_batches: int = 8) -> list[list[int]]:
    """A random order, sorted by length inside chunks of `chunk_batches` batches (less
    padding), then the batches shuffled: every example once per epoch."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    step = batch_size * chunk_batches
    for s in range(0, len(order), step):
        chunk = sorted(order[s:s + step], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def attach_members(model, cfg: ProfileConfig, targets: list[str], seed: int | None = None):
    """Wrap the frozen backbone with M independently initialised LoRA adapters."""
    if seed is None:
        seed = cfg.seed or 0
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(seed * 1000 + 0)
    peft_model = get_peft_model(model, lcfg, adapter_name="m0")
    for m in range(1, cfg.members):
        torch.manual_seed(seed * 1000 + m)
        peft_model.add_adapter(f"m{m}", lcfg)
    return peft_model


def member_params(model, adapter: str) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n and f".{adapter}." in n]


def build_profile(rows: list[dict], cfg: ProfileConfig, device: str = "cpu",
                  progress: bool = True, model=None, tokenizer=None,
                  keep_train_norms: bool = False, shard_dir: Path | None = None,
                  launch=None, log=print) -> Profile:
    """Train the LoRA ensemble on `rows` and record per-example gradient norms.

    Members are independent (own init seed, own data order), so the ensemble is built member
    by member, each written as a shard as soon as it finishes (``shard_dir``): a crash loses
    at most the member in progress, and under a launcher (``launch``, stage ``score``) each
    rank trains the members it owns (member m on rank m % W). The assembled profile equals
    a single-process build. ``keep_train_norms`` (with ``record="pass"``) also records the
    free during-training norms of the same members into ``train_norms``."""
    import tempfile

    from .launch import run_workers, uses_launcher
    from .shards import ShardStore

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpd:
        store = ShardStore(shard_dir or Path(tmpd) / "members")
        if uses_launcher(launch, "score") and store.missing(cfg.members):
            from .benchmark.pipeline import write_rows_file

            job = store.folder / "job"
            write_rows_file(job / "rows.jsonl", rows)
            run_workers("profile", {"rows_file": str(job / "rows.jsonl"), "profile": to_dict(cfg),
                                    "shard_dir": str(store.folder), "device": device,
                                    "keep_train_norms": keep_train_norms}, launch, job, log)
        else:
            build_members(rows, cfg, store.folder, device, 0, 1, progress, model, tokenizer,
                          keep_train_norms)
        missing = store.missing(cfg.members)
        if missing:
            raise RuntimeError(f"gradient profile: members {missing} were not built (see the "
                               f"worker log in {store.folder / 'job'})")
        prof = assemble_profile(store, cfg, keep_train_norms)
    prof.meta["wall_seconds"] = time.perf_counter() - t_start
    return prof


def build_members(rows: list[dict], cfg: ProfileConfig, shard_dir: Path, device: str = "cpu",
                  rank: int = 0, world: int = 1, progress: bool = True, model=None,
                  tokenizer=None, keep_train_norms: bool = False) -> None:
    """Train the ensemble members this rank owns (m % world == rank) that have no shard yet;
    write each member's norms/losses (and member 0's projections and epoch-1 snapshot)."""
    from tqdm.auto import tqdm

    from .models import default_lora_targets, load_model, load_tokenizer
    from .shards import ShardStore

    store = ShardStore(shard_dir)
    todo = store.todo(cfg.members, rank, world)
    if not todo:
        return
    seed = 0 if cfg.seed is None else cfg.seed
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.proxy)
    if model is None:
        model = load_model(cfg.proxy, device)
    for p in model.parameters():
        p.requires_grad_(False)
    targets = cfg.target_modules or default_lora_targets(model)
    peft_model = attach_members(model, cfg, targets, seed)
    data = tokenize_pool(rows, tokenizer, cfg.template, cfg.max_length)
    lengths = [len(d["input_ids"]) for d in data]
    N, E = len(data), cfg.epochs
    bf16 = cfg.precision == "bf16"
    pad = tokenizer.pad_token_id
    by_length = sorted(range(N), key=lambda i: lengths[i])  # the pass: less padding
    n_params = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n and ".m0." in n)
    bar = tqdm(total=len(todo) * E * N * (2 if cfg.record == "pass" else 1),
               desc="gradient profile", unit="ex", disable=not progress)
    for m in todo:
        name = f"m{m}"
        norms, losses = np.zeros((E, N)), np.zeros((E, N))
        train_norms = np.zeros((E, N)) if (cfg.record == "train" or keep_train_norms) else None
        proj = np.zeros((N, cfg.projection_dim), np.float32) if (cfg.projection_dim > 0 and m == 0) else None
        projector = None
        peft_model.base_model.set_adapter(name)
        params = member_params(peft_model, name)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=cfg.learning_rate)
        rng = random.Random(seed * 7919 + m)
        snapshot = None
        t_member = time.perf_counter()
        train_seconds = 0.0

        def record(e, idx, batch, want_proj, projector, into):
            n_b, l_b, p_b, projector = _step_record(peft_model, batch, bf16, want_proj, projector,
                                                    cfg, device, seed)
            into[e, idx] = n_b
            if into is norms:
                losses[e, idx] = l_b
                if p_b is not None:
                    proj[idx] = p_b
            return projector

        for e in range(E):
            want_proj = proj is not None and e == E - 1
            t0 = time.perf_counter()
            peft_model.train()
            for idx in bucketed_batches(lengths, cfg.batch_size, rng):
                batch = collate([data[i] for i in idx], pad, device)
                if train_norms is not None:  # norms for free from this update's backward
                    projector = record(e, idx, batch, want_proj and cfg.record == "train",
                                       projector, norms if cfg.record == "train" else train_norms)
                    if cfg.record == "train" and keep_train_norms:
                        train_norms[e, idx] = norms[e, idx]
                else:
                    opt.zero_grad(set_to_none=True)
                    loss = scored_losses(peft_model, batch, bf16)
                    loss.sum().backward()
                for p in params:
                    if p.grad is not None:
                        p.grad.div_(len(idx))
                opt.step()
                opt.zero_grad(set_to_none=True)
                bar.update(len(idx))
            train_seconds += time.perf_counter() - t0
            if m == 0 and e == 0:
                snapshot = {n: p.detach().clone() for n, p in peft_model.named_parameters()
                            if "lora_" in n and f".{name}." in n}
            if cfg.record == "pass":  # g_i at theta_e, backbone in eval mode (no dropout)
                peft_model.eval()
                for s in range(0, N, cfg.batch_size):
                    idx = by_length[s:s + cfg.batch_size]
                    batch = collate([data[i] for i in idx], pad, device)
                    projector = record(e, idx, batch, want_proj, projector, norms)
                    for p in params:
                        p.grad = None
                    bar.update(len(idx))
                peft_model.train()
        for p in params:
            p.requires_grad_(False)
        arrays = {"norms": norms, "losses": losses,
                  "seconds": np.array([time.perf_counter() - t_member, train_seconds]),
                  "info": np.array([N, n_params, float(np.mean(lengths))]),
                  "targets": np.array(targets)}
        if train_norms is not None and keep_train_norms:
            arrays["train_norms"] = train_norms
        if proj is not None:
            arrays["projections"] = proj
        if snapshot:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in snapshot.items()},
                      str(store.folder / "member0_epoch1.safetensors"))
        store.write(m, **arrays)
    bar.close()


def assemble_profile(store, cfg: ProfileConfig, keep_train_norms: bool = False) -> Profile:
    """The profile from its member shards (identical to a single-process build)."""
    shards = [store.read(m) for m in range(cfg.members)]
    norms = np.stack([s["norms"] for s in shards])
    losses = np.stack([s["losses"] for s in shards])
    N, n_params, mean_len = shards[0]["info"]
    train_seconds = float(sum(s["seconds"][1] for s in shards))
    M, E = cfg.members, cfg.epochs
    snap_file = store.folder / "member0_epoch1.safetensors"
    snapshot = None
    if snap_file.exists():
        from safetensors.torch import load_file

        snapshot = load_file(str(snap_file))
    seed = 0 if cfg.seed is None else cfg.seed
    meta = {"config": {**to_dict(cfg), "seed": seed}, "n": int(N), "members": M, "epochs": E,
            "targets": [str(t) for t in shards[0]["targets"]],
            "lora_params_per_member": int(n_params),
            "member_seconds": [float(s["seconds"][0]) for s in shards],
            "train_seconds": train_seconds,
            "examples_per_second_per_member": (M * E * N) / max(train_seconds, 1e-9),
            "mean_tokens_per_example": float(mean_len)}
    prof = Profile(norms, losses, shards[0].get("projections"), meta, snapshot)
    if keep_train_norms:
        prof.train_norms = np.stack([s["train_norms"] for s in shards])
    return prof


def _step_record(model, batch, bf16, want_proj, projector, cfg, device, seed=0):
    with PerExampleGrads(model) as cap:
        losses = scored_losses(model, batch, bf16)
        losses.sum().backward()
        grads = cap.collect()
    flat_sq = sum(G.pow(2).sum(dim=(1, 2)) for G in grads)
    p_b = None
    if want_proj:
        flat = torch.cat([G.reshape(G.size(0), -1) for G in grads], dim=1)
        if projector is None:
            projector = Projector([flat.size(1)], cfg.projection_dim, cfg.projection,
                                  seed + 12345, device)
        p_b = projector(flat).cpu().numpy()
    return flat_sq.sqrt().cpu().numpy(), losses.detach().float().cpu().numpy(), p_b, projector


def cached_profile(rows: list[dict], cfg: ProfileConfig, ctx) -> Profile:
    """The profile for (pool, cfg), from the run folder's cache when present."""
    from .runs import stage_key

    if cfg.seed is None:  # the run seed varies member inits and data orders
        cfg = dataclasses.replace(cfg, seed=ctx.seed)
    if ctx.run_dir is None:
        return build_profile(rows, cfg, ctx.device, progress=ctx.progress, launch=ctx.launch,
                             log=ctx.log)
    key = stage_key("profiles", cfg.proxy.replace("/", "_"), cfg, ctx.pool_key)
    shard_dir = Path(ctx.run_dir.root) / "shards" / f"profile-{key.key}"

    def build(tmp: Path) -> None:
        build_profile(rows, cfg, ctx.device, progress=ctx.progress, shard_dir=shard_dir,
                      launch=ctx.launch, log=ctx.log).save(tmp)

    reused = ctx.run_dir.done(key)
    folder = ctx.run_dir.cached(key, build, cfg, log=ctx.log)
    if shard_dir.exists():  # the finished profile holds everything the shards did
        import shutil

        shutil.rmtree(shard_dir, ignore_errors=True)
    prof = Profile.load(folder)
    if reused:  # charge the proxy training to this selection too (a fresh build is already timed)
        ctx.extra_seconds += float(prof.meta.get("wall_seconds", 0.0))
    ctx.notes["profile"] = str(folder)
    return prof


# --------------------------------------------------------------------------- embedding / LM head
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
    base, dec, head = _decoder_and_head(model)
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
