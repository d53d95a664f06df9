"""The gradient profile: the proxy-model work shared by several selectors.

One frozen backbone carries an ensemble of M LoRA adapters (PEFT). Each member gets its own
initialisation seed and its own data order and minimises its *own* loss (the ensemble loss
is the mean of member losses, never the loss of an averaged prediction). While a member
trains, every batch's backward also yields, for free, each example's own-loss gradient
w.r.t. that member's LoRA parameters (:class:`~.pergrad.PerExampleGrads`).

``record="pass"`` measures what eqs. 1-2 of GradFiltering define: g_i^(m,e) at theta_e, the
weights after e epochs, in a separate no-update pass at the end of each epoch with the
backbone in eval mode (dropout off: GPT-2's 0.1 dropout otherwise moves the same example's
norm by 3-20%). ``record="train"`` records ||G_i|| for free from the training backward, at
the weights in force when i's batch comes up (so an example's position in the member's data
order enters the ensemble variance) and with dropout as in training.

Optionally a seeded projection of member 0's last-epoch gradients is kept (SPICE-style
log-det selectors). The profile is one cached stage (``profiles/<proxy>-<h8>``) keyed by the
proxy config and the pool, so every selector that uses it shares one proxy training.
"""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import to_dict
from ...estimates import model_params, profile_flops
from ...hardware import resolve_precision
from ...launch import run_workers, uses_launcher, write_job_rows
from ...models import default_lora_targets, load_model, load_tokenizer
from ...runs import stage_key
from ...shards import ShardStore
from ..codeid import modules_identity
from .config import ProfileConfig
from .pergrad import PerExampleGrads
from .projections import Projector
from .scoring import collate, scored_losses, tokenize_pool

if TYPE_CHECKING:  # annotations only
    import torch


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
            from safetensors.torch import save_file  # lazy: heavy

            save_file({k: v.contiguous() for k, v in self.snapshot.items()},
                      str(folder / "member0_epoch1.safetensors"))

    @classmethod
    def load(cls, folder: Path) -> "Profile":
        proj = folder / "projections.npy"
        snap = folder / "member0_epoch1.safetensors"
        snapshot = None
        if snap.exists():
            from safetensors.torch import load_file  # lazy: heavy

            snapshot = load_file(str(snap))
        return cls(np.load(folder / "norms.npy"), np.load(folder / "losses.npy"),
                   np.load(proj) if proj.exists() else None,
                   json.loads((folder / "meta.json").read_text()), snapshot)


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
    import torch  # lazy: heavy (see the package docstring)
    if seed is None:
        seed = cfg.seed or 0
    from peft import LoraConfig, get_peft_model  # lazy: heavy

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
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpd:
        store = ShardStore(shard_dir or Path(tmpd) / "members")
        if uses_launcher(launch, "score") and store.missing(cfg.members):
            job = store.folder / "job"
            write_job_rows(job / "rows.jsonl", rows)
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
    import torch  # lazy: heavy (see the package docstring)
    from tqdm.auto import tqdm  # lazy: heavy

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
            from safetensors.torch import save_file  # lazy: heavy

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
        from safetensors.torch import load_file  # lazy: heavy

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
    import torch  # lazy: heavy (see the package docstring)
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


PROFILE_CODE = ("selbench.selectors.proxy.profile",)  # what the profile's code identity covers


def cached_profile(rows: list[dict], cfg: ProfileConfig, ctx) -> Profile:
    """The profile for (pool, cfg), from the run folder's cache when present. Its key holds
    the config with the run seed and the precision resolved on this device, the pool, and
    the code of the proxy layer. The proxy work is recorded as shared work of the selection
    (:meth:`SelectionContext.shared`), so a study charges it once however many selectors
    use it."""
    if cfg.seed is None:  # the run seed varies member inits and data orders
        cfg = dataclasses.replace(cfg, seed=ctx.seed)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, ctx.device))
    if ctx.run_dir is None:
        return build_profile(rows, cfg, ctx.device, progress=ctx.progress, launch=ctx.launch,
                             log=ctx.log)
    key = stage_key("profiles", cfg.proxy.replace("/", "_"), cfg, ctx.pool_key,
                    modules_identity(*PROFILE_CODE))
    shard_dir = ctx.run_dir.shard_root / f"profile-{key.key}"

    def build(tmp: Path) -> None:
        build_profile(rows, cfg, ctx.device, progress=ctx.progress, shard_dir=shard_dir,
                      launch=ctx.launch, log=ctx.log).save(tmp)

    reused = ctx.run_dir.done(key)
    folder = ctx.run_dir.cached(key, build, cfg, log=ctx.log)
    if shard_dir.exists():  # the finished profile holds everything the shards did
        shutil.rmtree(shard_dir, ignore_errors=True)
    prof = Profile.load(folder)
    P = model_params(cfg.proxy)
    T = float(prof.meta.get("mean_tokens_per_example") or 0)
    ctx.shared(f"profiles/{key.key}", f"gradient profile ({cfg.proxy}, {cfg.members} members x "
               f"{cfg.epochs} epochs)", float(prof.meta.get("wall_seconds", 0.0)), not reused,
               profile_flops(P, len(rows), T, cfg.members, cfg.epochs, cfg.record) if P and T else None)
    ctx.notes["profile"] = str(folder)
    return prof
