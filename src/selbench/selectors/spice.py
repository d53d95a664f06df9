"""SPICE as released (``spice``): windowed AdaFisher selection while the proxy trains.

Reproduces the selection procedure of the authors' code, Chang-pw/SPICE (ICLR 2026, MIT
licence) at commit 01a7b4247654f51b231ba4e35d0b7e8e6dbc3c98: ``train.py`` (the loop),
``spice/select.py`` (``top_k_select``, ``greedy_select_with_conflict_penalty``),
``spice/adafisher.py`` (per-example gradients, the diagonal Fisher, the projection),
``spice/models.py``, ``spice/data.py`` and ``configs/default.yaml`` / ``spice/config.py``
(defaults). Facts, restated (their code is not copied):

1. Proxy: a causal LM with LoRA on every linear layer of the decoder (their default list
   q/k/v/o/gate/up/down of Qwen2-0.5B = all of them; here PEFT ``all-linear``, which skips
   the LM head), r=16, alpha=32, dropout 0.05, ``model.train()`` for the whole run. Their
   proxy is Qwen2-0.5B; offline here the embedded SmolLM2-135M-Instruct.
2. Data order: ``torch.randperm(N, generator=torch.Generator().manual_seed(seed + epoch))``
   with the epoch counted from 0; windows are consecutive slices of ``pool_size`` (128) of
   that permutation, the last one shorter.
3. Per window, at the *current* proxy weights and with dropout active (train mode), each
   candidate's gradient of its own loss w.r.t. all trainable (LoRA) parameters, flattened in
   ``model.parameters()`` order (``compute_per_sample_grads*``: one forward/backward per
   example). The loss is HF's mean token cross-entropy over the text
   ``"Instruction:\\n{instruction}\\n\\nResponse:\\n{response}"`` tokenized with special
   tokens, truncated to ``max_length``, labels = ids with the pad id set to -100 (so the
   instruction tokens are scored too). Optional projection (``use_gradient_projection``,
   default off): a Gaussian ``randn(P, d)`` drawn after ``torch.manual_seed(42)``, each
   column scaled to unit norm, applied only when P > d.
4. Selection inside the window, diagonal Fisher (``fisher_mode: diag``):
   ``s_x = sum_j g_xj^2 / den_j`` with ``den = 1``; marginal gain ``log(1 + alpha s_x)``.
   - ``top_k`` (their default): the k largest gains with ``den = 1`` (a stable descending
     sort, so ties keep window order); with ``halflife_threshold`` t the walk down the
     sorted list stops at the first gain <= t * (largest gain) - even at the first element.
   - ``conflict_penalty``: greedy; score = gain - lam * |cos(g_x, mean of the window's picks
     so far)| when that cosine is negative (cosine = dot / (|a| |b| + 1e-8)); a strict ``>``
     scan in window order (ties -> the earlier candidate); after each pick
     ``den += alpha * h^2`` with ``h = |g| * g`` (``adafisher_h_vector``,
     ``update_diag_den``). So den grows with g^4, not g^2: odd next to the usual diagonal
     Fisher ``1 + alpha sum g^2``, but it is what they ship and it is reproduced exactly.
   - ``fisher_mode: scalar``: ``s = ||g||^2 / (1 + alpha)`` (den unused).
5. Training: AdamW(lr 2e-4, weight decay 0.01) with ``get_linear_schedule_with_warmup``
   (warmup ``max(1, int(0.03 * T))``, T = number of windows of one pass, as with their
   ``run.sh``'s ``num_epochs 1``), on the selected
   examples only: micro-batches of ``per_device_train_batch_size`` (4), each loss the HF
   token mean of its micro-batch, the gradients *summed* over micro-batches, one optimizer
   and one scheduler step per window (``update_frequency`` windows accumulated, default 1).
   The HF schedule starts at lr 0, so the first update moves only Adam's moments.
6. The subset is every window's picks (their ``selected_data.jsonl``; unique indices in
   ``selected_data_summary.json``).

Budget mapping (selbench gives a ratio, SPICE a ``select_k`` per ``pool_size`` window):
exactly one pass over the pool (their ``num_epochs: 1`` in ``run.sh``), windows as in 2.,
and window w = [a, b) selects ``k_w = ceil(K b / N) - ceil(K a / N)`` examples with
K = ceil(ratio * N): so ``k_w / n_w`` is ``ratio`` up to rounding (``select_k = ratio *
pool_size`` on average), ``k_w <= n_w``, and the k_w sum to K exactly. One pass has no
duplicates, so the subset has exactly K distinct examples unless the half-life stop ends a
window early (then the shortfall is reported as ``short_by``, never padded).

What differs from the reference, and why:
- Per-example gradients come batched from hooks (:class:`selbench.selectors.proxy.
  pergrad.PerExampleGrads`: ``sum_t d_t x_t^T`` per LoRA A/B layer), ``batch_size`` candidates per
  backward (in length order, at most ``max_batch_tokens`` padded tokens), right-padded;
  they equal the batch-size-1 autograd loop to float rounding
  (tested, with dropout off, and with dropout on at batch size 1 under the same seed).
  With dropout on, masks are drawn per batch instead of per example, so they differ from any
  particular run of the reference (which is itself unseeded per example).
- Dropout randomness is seeded (``torch.manual_seed(seed)`` inside a forked RNG, so the
  caller's RNG is untouched): the selection is deterministic for a seed. The reference's
  projection calls ``torch.manual_seed(42)`` on the global generator every window, which
  also resets its dropout stream; that side effect is not reproduced.
- Alpaca rows have ``input``: the instruction field is ``instruction`` + ``"\\n" + input``
  when the input is non-empty (their data has only instruction/response).
- fp32 on every device (their models load in fp16 on CUDA); no DDP.
- The last window's optimizer step is skipped: it cannot change any pick.
- ``halflife_threshold`` in ``conflict_penalty`` mode is a selbench extension (the
  reference's conflict-penalty selector has no early stop): the rule of their
  ``greedy_select_with_metrics`` (stop when a pick's gain <= t * the first pick's gain,
  checked from the second pick on).
- Projection: ``auto`` uses their unit-column Gaussian when the matrix fits (P x d <=
  2^28 entries), else selbench's seeded CountSketch (the embedded proxy has P = 4.9M LoRA
  parameters: a dense 4.9M x 8192 matrix is 160 GB); the default is no projection, as
  theirs.

This selector trains its own proxy (each window's gradients come from the weights the
previous windows' picks produced), so it cannot share the G-SNR gradient profile that
``gsnr``, ``grads`` and ``spice-logdet`` use.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ConfigError
from ..estimates import model_params
from ..models import load_model, load_tokenizer
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget
from .proxy.pergrad import PerExampleGrads
from .proxy.projections import Projector
from .proxy.scoring import collate, scored_losses, tokenize_pool

REFERENCE = "Chang-pw/SPICE@01a7b4247654f51b231ba4e35d0b7e8e6dbc3c98"


# --------------------------------------------------------------------------- window selection
@dataclass
class WindowPicks:
    selected: list[int]  # positions in the window, in pick order
    gains: list[float]  # log(1 + alpha s) of each pick when picked
    penalties: list[float]  # conflict penalty of each pick (0 in top_k)
    first_gains: np.ndarray  # every candidate's gain with den = 1


def _rowsum(G, fn, chunk: int | None = None) -> np.ndarray:
    """sum_j fn(G[:, cols], cols) over column chunks, in float64 numpy (temporaries of
    about 2^25 entries, 256 MiB)."""
    n, P = G.shape
    chunk = chunk or max(1, (1 << 25) // max(n, 1))
    out = np.zeros(n, dtype=np.float64)
    for s in range(0, P, chunk):
        out += fn(_f64(G[:, s:s + chunk]), slice(s, s + chunk)).sum(axis=1)
    return out


def _f64(block) -> np.ndarray:
    if hasattr(block, "detach"):
        block = block.detach().cpu().numpy()
    return np.asarray(block, dtype=np.float64)


def select_window(G, k: int, mode: str = "top_k", alpha: float = 1.0, lam: float = 0.1,
                  halflife_threshold: float | None = None, fisher_mode: str = "diag",
                  sq_norms: np.ndarray | None = None) -> WindowPicks:
    """SPICE's selection inside one window of candidate gradients (rows of G, n x P).

    ``mode``: ``top_k`` | ``conflict_penalty`` (see the module docstring, point 4). G may be
    a numpy array or a torch tensor (any float dtype; the arithmetic is float64). In
    ``top_k`` mode only the squared norms are needed: pass ``sq_norms`` and ``G=None``.
    """
    if mode not in ("top_k", "conflict_penalty"):
        raise ValueError(f"unknown SPICE mode {mode!r} (top_k | conflict_penalty)")
    if fisher_mode not in ("diag", "scalar"):
        raise ValueError(f"unknown fisher_mode {fisher_mode!r} (diag | scalar)")
    if sq_norms is None:
        sq_norms = _rowsum(G, lambda b, c: b * b)
    sq_norms = np.asarray(sq_norms, dtype=np.float64)
    n = len(sq_norms)
    s0 = sq_norms if fisher_mode == "diag" else sq_norms / (1.0 + alpha)
    first = np.log(1.0 + alpha * s0)
    k = max(0, min(int(k), n))
    if mode == "top_k":
        order = np.argsort(-first, kind="stable")
        sel: list[int] = []
        for i in order:
            if len(sel) >= k:
                break
            if halflife_threshold is not None and first[i] <= first[order[0]] * halflife_threshold:
                break
            sel.append(int(i))
        return WindowPicks(sel, [float(first[i]) for i in sel], [0.0] * len(sel), first)

    if G is None:
        raise ValueError("conflict_penalty needs the gradient vectors G")
    P = G.shape[1]
    den = np.ones(P, dtype=np.float64)
    norms = np.sqrt(sq_norms)
    msum = np.zeros(P, dtype=np.float64)
    taken = np.zeros(n, dtype=bool)
    sel, gains, pens = [], [], []
    initial = None
    for _ in range(k):
        if fisher_mode == "diag":
            s = _rowsum(G, lambda b, c: b * b / den[c])
        else:
            s = s0
        gain = np.log(1.0 + alpha * s)
        pen = np.zeros(n)
        if sel:
            mean = msum / len(sel)
            dots = _rowsum(G, lambda b, c: b * mean[c])
            cos = dots / (norms * np.linalg.norm(mean) + 1e-8)
            pen = np.where(cos < 0, lam * np.abs(cos), 0.0)
        total = np.where(taken, -np.inf, gain - pen)
        y = int(np.argmax(total))  # first maximum = the reference's strict '>' scan
        if halflife_threshold is not None:
            if initial is None:
                initial = gain[y]
            elif gain[y] <= initial * halflife_threshold:
                break
        sel.append(y)
        gains.append(float(gain[y]))
        pens.append(float(pen[y]))
        taken[y] = True
        g = _f64(G[y])
        msum += g
        if fisher_mode == "diag":
            h = np.abs(g) * g
            den += alpha * (h * h)
    return WindowPicks(sel, gains, pens, first)


def window_budgets(n: int, k: int, pool_size: int) -> list[tuple[int, int, int]]:
    """(start, end, k_w) per window of one pass: k_w = ceil(k end / n) - ceil(k start / n)."""
    out = []
    for a in range(0, n, pool_size):
        b = min(n, a + pool_size)
        out.append((a, b, -(-k * b // n) - (-(-k * a // n))))
    return out


def epoch_order(n: int, seed: int, epoch: int = 0) -> list[int]:
    """The reference's data order: randperm(n) from a CPU generator seeded seed + epoch."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(int(seed) + int(epoch))
    return torch.randperm(n, generator=gen).tolist()


# --------------------------------------------------------------------------- proxy + gradients
def spice_text(row: dict) -> str:
    """The reference's SFT text, with an Alpaca input appended to the instruction."""
    inst = row["instruction"]
    if (row.get("input") or "").strip():
        inst = f"{inst}\n{row['input']}"
    return f"Instruction:\n{inst}\n\nResponse:\n{row['output']}"


def tokenize_rows(rows: list[dict], tokenizer, template: str, max_length: int) -> list[dict]:
    """``spice``: the reference's text, every token scored except pad ids; else a selbench
    template (``alpaca`` | ``chat``, response tokens only)."""
    if template != "spice":
        return tokenize_pool(rows, tokenizer, template, max_length)
    pad = tokenizer.pad_token_id
    out = []
    for r in rows:
        ids = tokenizer(spice_text(r), truncation=True, max_length=max_length)["input_ids"]
        out.append({"input_ids": ids, "labels": [-100 if t == pad else t for t in ids]})
    return out


def attach_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                targets: list[str] | None = None):
    """LoRA on every linear layer (PEFT ``all-linear``: not the LM head) or on ``targets``."""
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=targets or "all-linear", bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def token_batches(lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Indices in length order, cut into batches of at most ``batch_size`` examples and (when
    set) at most ``max_tokens`` padded tokens; an example longer than that goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= batch_size or
                    (max_tokens and (len(cur) + 1) * max(lengths[i], lengths[cur[-1]]) > max_tokens)):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def window_gradients(model, examples: list[dict], pad_id: int, batch_size: int, device,
                     vectors: bool = True, projector=None, max_tokens: int | None = None):
    """Every example's own-loss gradient w.r.t. the trainable LoRA parameters at the current
    weights, from batched backwards with :class:`~selbench.selectors.proxy.pergrad.PerExampleGrads`.

    Returns (G [n, P] float32 in ``model.parameters()`` order - or [n, d] projected - or
    None when ``vectors`` is False, squared norms [n] float64 of those rows, losses [n]). Examples go through in length order (less padding); rows come back in the
    given order; ``max_tokens`` caps the padded tokens of one batch (activation memory).
    The model's mode (train: dropout on) is left as it is."""
    import torch

    params = trainable(model)
    n = len(examples)
    sq = np.zeros(n)
    losses = np.zeros(n)
    G = None
    for idx in token_batches([len(e["input_ids"]) for e in examples], batch_size, max_tokens):
        batch = collate([examples[i] for i in idx], pad_id, device)
        for p in params:
            p.grad = None
        with PerExampleGrads(model) as cap:
            loss = scored_losses(model, batch)
            loss.sum().backward()
            grads = cap.collect()
        flat = torch.cat([g.reshape(g.size(0), -1) for g in grads], dim=1)
        rows = projector(flat) if projector is not None else flat
        sq[idx] = rows.detach().double().pow(2).sum(1).cpu().numpy()
        losses[idx] = loss.detach().double().cpu().numpy()
        if vectors:
            if G is None:
                G = torch.empty((n, rows.size(1)), dtype=torch.float32)
            G[idx] = rows.detach().float().cpu()
        del grads, flat
    for p in params:
        p.grad = None
    return G, sq, losses


def reference_window_gradients(model, examples: list[dict], pad_id: int, device):
    """The reference's loop (``compute_per_sample_grads``): one example per forward/backward
    with HF's own loss, the flattened ``.grad`` of every trainable parameter -> [n, P]."""
    import torch

    params = trainable(model)
    rows = []
    for ex in examples:
        for p in params:
            p.grad = None
        b = collate([ex], pad_id, device)
        model(**b).loss.backward()
        rows.append(torch.cat([p.grad.detach().reshape(-1) for p in params if p.grad is not None]))
        for p in params:
            p.grad = None
    return torch.stack(rows).float().cpu()


class ReferenceProjection:
    """The reference's projection: ``torch.manual_seed(42); randn(P, d)``, unit columns."""

    def __init__(self, P: int, dim: int, seed: int = 42, device="cpu"):
        import torch

        gen = torch.Generator(device="cpu").manual_seed(seed)
        m = torch.randn(P, dim, generator=gen)
        self.matrix = (m / m.norm(dim=0, keepdim=True)).to(device)

    def __call__(self, flat):
        return flat @ self.matrix


# --------------------------------------------------------------------------- the selector
@dataclass
class SpiceConfig(SelectorConfig):
    proxy: str = "smollm2-135m-instruct"  # reference: Qwen/Qwen2-0.5B
    max_length: int = 2048  # configs/default.yaml
    batch_size: int = 8  # window candidates per batched per-example backward (their batch_gradient_size)
    max_batch_tokens: int = 1024  # and at most this many padded tokens per backward (memory only)
    pool_size: int = 128  # window (candidates per selection step)
    mode: str = "top_k"  # selection_method: top_k | conflict_penalty
    fisher_mode: str = "diag"  # diag | scalar
    alpha: float = 1.0  # alpha_fisher
    lam: float = 0.1  # conflict_penalty weight
    halflife_threshold: float | None = None  # early stop inside a window (None = off)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None  # None = all linear layers (PEFT all-linear)
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    train_batch_size: int = 4  # per_device_train_batch_size of the proxy's update
    update_frequency: int = 1  # windows accumulated per optimizer step
    projection_dim: int = 0
    """0 = full gradients (their default). In ``conflict_penalty`` mode (which needs dot
    products) a projection to this many dims; ``top_k`` always uses exact squared norms."""
    projection: str = "auto"  # auto | gaussian (theirs) | countsketch | rademacher
    template: str = "spice"  # spice (their text, all tokens scored) | alpaca | chat
    seed_offset: int = 0  # reference seed = run seed + seed_offset (theirs: 2026)

    def __post_init__(self):
        if self.mode not in ("top_k", "conflict_penalty"):
            raise ConfigError(f"spice mode must be top_k or conflict_penalty, got {self.mode!r}")
        if self.fisher_mode not in ("diag", "scalar"):
            raise ConfigError(f"spice fisher_mode must be diag or scalar, got {self.fisher_mode!r}")
        if self.projection not in ("auto", "gaussian", "countsketch", "rademacher"):
            raise ConfigError(f"spice projection must be auto|gaussian|countsketch|rademacher, "
                              f"got {self.projection!r}")
        if self.pool_size < 1 or self.batch_size < 1 or self.train_batch_size < 1:
            raise ConfigError("spice pool_size, batch_size and train_batch_size must be >= 1")


@SELECTORS.register("spice")
class Spice(Selector):
    """SPICE as released: see the module docstring."""

    config_cls = SpiceConfig
    paper_name = "SPICE"
    reference = REFERENCE
    report_rank = 45
    needs = ("proxy",)
    cost_class = "proxy-train"
    description = ("SPICE (released algorithm): windows of 128 from a seeded permutation, "
                   "per-example LoRA grads at the current proxy, AdaFisher top-k / conflict "
                   "penalty, AdamW step on the picks (trains its own proxy: no shared profile)")

    @classmethod
    def test_params(cls, tiny_model: str) -> dict[str, Any]:
        return {"proxy": tiny_model, "max_length": 48, "batch_size": 8, "pool_size": 12,
                "learning_rate": 1e-2}

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict | None:
        P = model_params(self.config.proxy)
        if not P:
            return None  # one forward+backward per candidate at the current weights
        return {"what": f"per-example gradients of {self.config.proxy} (trains its own proxy)",
                "flops": 6.0 * P * n * min(tokens, self.config.max_length), "kind": "proxy"}

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        return self.select(pool, 1.0, ctx).scores

    def select(self, pool, ratio, ctx, scores=None) -> Selection:
        import torch

        dev = ctx.device if ctx.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        devices = [torch.device(dev).index or 0] if str(dev).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            return self._select(pool, ratio, ctx, dev)

    def _select(self, pool, ratio, ctx, dev) -> Selection:
        import torch
        from tqdm.auto import tqdm
        from transformers import get_linear_schedule_with_warmup

        c = self.config
        t_start = time.perf_counter()
        seed = int(ctx.seed) + int(c.seed_offset)
        N = len(pool)
        K = budget(ratio, N)
        tok = load_tokenizer(c.proxy)
        base = load_model(c.proxy, dev)
        torch.manual_seed(seed)  # LoRA init and the dropout masks (their train.py seeds first too)
        model = attach_lora(base, c.lora_r, c.lora_alpha, c.lora_dropout, c.target_modules)
        model.train()
        params = trainable(model)
        P = int(sum(p.numel() for p in params))
        data = tokenize_rows(pool.rows, tok, c.template, c.max_length)
        pad = tok.pad_token_id
        windows = window_budgets(N, K, c.pool_size)
        T = len(windows)
        opt = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        sched = get_linear_schedule_with_warmup(opt, max(1, int(c.warmup_ratio * T)), T)
        order = epoch_order(N, seed, 0)

        # top_k needs only each candidate's squared norm: computed exactly from the full
        # per-example gradient (their default projects nothing either); a projection is
        # applied only where dot products between candidates are needed (conflict_penalty)
        projector, proj_kind = None, "none"
        need_vectors = c.mode == "conflict_penalty"
        if need_vectors and c.projection_dim > 0 and P > c.projection_dim:
            kind = c.projection
            if kind == "auto":
                kind = "gaussian" if P * c.projection_dim <= 2 ** 28 else "countsketch"
            if kind == "gaussian":
                projector = ReferenceProjection(P, c.projection_dim, 42, dev)
            else:
                projector = Projector([P], c.projection_dim, kind, seed + 12345, dev)
            proj_kind = kind

        scores = np.full(N, np.nan)
        picked: list[int] = []
        seen: set[int] = set()
        accumulated: list[int] = []
        win_info = []
        t_grad = t_sel = t_train = 0.0
        prev = None
        bar = tqdm(total=N, desc="spice windows", unit="ex", disable=not ctx.progress)
        for w, (a, b, kw) in enumerate(windows):
            idx = order[a:b]
            now = torch.cat([p.detach().reshape(-1) for p in params]).clone()
            delta = float((now - prev).norm()) if prev is not None else 0.0
            prev = now
            t0 = time.perf_counter()
            G, sq, losses = window_gradients(model, [data[i] for i in idx], pad, c.batch_size,
                                             dev, need_vectors, projector, c.max_batch_tokens)
            t1 = time.perf_counter()
            wp = select_window(G, kw, c.mode, c.alpha, c.lam, c.halflife_threshold,
                               c.fisher_mode, sq_norms=sq)
            t2 = time.perf_counter()
            scores[idx] = wp.first_gains
            chosen = [idx[j] for j in wp.selected]
            for i in chosen:
                if i not in seen:
                    seen.add(i)
                    picked.append(i)
            accumulated += chosen
            lr_used = float(opt.param_groups[0]["lr"])
            train_loss = None
            should_update = ((w + 1) % c.update_frequency == 0) or w == T - 1
            if should_update and accumulated and w < T - 1:
                train_loss = self._update(model, opt, sched, [data[i] for i in accumulated],
                                          pad, dev, c.train_batch_size, c.max_batch_tokens)
                accumulated = []
            t3 = time.perf_counter()
            t_grad += t1 - t0
            t_sel += t2 - t1
            t_train += t3 - t2
            win_info.append({"window": w, "start": a, "size": b - a, "k": kw,
                             "picked": len(chosen), "lr": lr_used,
                             "weight_change_since_previous_window": delta,
                             "mean_candidate_loss": float(np.mean(losses)),
                             "train_loss": train_loss,
                             "gains": [round(x, 6) for x in wp.gains],
                             "penalties": [round(x, 6) for x in wp.penalties]})
            bar.update(b - a)
        bar.close()
        short = K - len(picked)
        wall = time.perf_counter() - t_start
        info = {"budget": K, "short_by": short, "reference": REFERENCE, "proxy_seed": seed,
                "windows": len(windows), "window_size": c.pool_size, "lora_params": P,
                "projection": proj_kind, "mode": c.mode,
                "gradient_seconds": t_grad, "window_select_seconds": t_sel,
                "train_seconds": t_train, "wall_seconds": wall,
                "examples_per_second": N / max(t_grad, 1e-9),
                "per_window": win_info}
        if short:
            info["filter_report"] = (f"half-life early stop (threshold {c.halflife_threshold}) "
                                     f"left the subset {short} short of the budget")
        ctx.notes["spice"] = {k: v for k, v in info.items() if k != "per_window"}
        return Selection(picked, scores, info)

    @staticmethod
    def _update(model, opt, sched, examples, pad, dev, mb, max_tokens=None) -> float:
        """Their step 5: HF token-mean loss per micro-batch, gradients summed, one step.
        A micro-batch over ``max_tokens`` padded tokens is run in pieces, each backward of
        its token-loss sum over the whole micro-batch's token count (the same gradient)."""

        def n_scored(e):
            return sum(1 for t in e["labels"][1:] if t != -100)

        opt.zero_grad(set_to_none=True)
        tot, cnt = 0.0, 0
        size = min(len(examples), mb)
        for s in range(0, len(examples), size):
            micro = examples[s:s + size]
            denom = max(1, sum(n_scored(e) for e in micro))
            loss_mb = 0.0
            for part in token_batches([len(e["input_ids"]) for e in micro], len(micro), max_tokens):
                batch = collate([micro[i] for i in part], pad, dev)
                per = scored_losses(model, batch)
                n_tok = (batch["labels"][:, 1:] != -100).sum(1).to(per.dtype)
                loss = (per * n_tok).sum() / denom
                loss.backward()
                loss_mb += float(loss.detach())
            tot += loss_mb * len(micro)
            cnt += len(micro)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return tot / max(cnt, 1)
