"""Superfiltering IFD (Instruction-Following Difficulty) with a small frozen proxy.

Reproduces the scoring of tianyi-lab/Superfiltering (code_ifd/data_analysis.py,
put_analysis_to_data.py, select_data.py) on any causal LM (paper: GPT-2; offline default:
SmolLM2-135M), batched:

- prompt = "{instruction}\\n{input}\\n" (input non-empty) else "{instruction}\\n"; no chat
  template; whole = prompt + output.
- PPL(y|x): ids = encode(whole) truncated to max_length; the response starts at token
  len(encode(whole[:whole.rfind(output)])); earlier labels are -100; PPL = exp(mean token
  loss over the scored response tokens) (HF shift: token t is predicted from t-1).
- PPL(y): ids = encode(output) truncated to max_length - len(encode(prompt)) + 1; labels =
  ids, so without a BOS token the first response token is not scored.
- IFD = PPL(y|x) / PPL(y). Semantics kept from the reference and counted: an exception
  while scoring gives (0, 0); an empty output gives NaN; a zero division gives IFD 0; no
  scored token (e.g. the response truncated away) gives NaN.
- Selection: keep numeric IFD < 1 (IFD >= 1: the instruction does not help predict the
  response, i.e. misaligned), sort descending, take the top ceil(ratio * N) where N is the
  pool size. If fewer survive, all survivors are taken and the shortfall is reported.

Speed: both perplexities of many examples go through one padded forward (right padding,
rows sorted by length to limit padding), and the LM head is applied only at scored
positions. Batched and batch-size-1 scores agree to ~1e-6 relative in fp32.
"""
from __future__ import annotations

import heapq
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import stable_hash
from ..estimates import forward_flops, model_params
from ..launch import run_workers, uses_launcher, write_job_rows
from ..models import load_model, load_tokenizer
from ..shards import ShardStore, ranges
from .base import (SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget,
                   rank_by_score)
from .embedcache import pool_embeddings
from .proxy.scoring import decoder_and_head, row_sums, scored_logits


def ifd_prompt(instruction: str, input_: str) -> str:
    return f"{instruction}\n{input_}\n" if input_ else f"{instruction}\n"


def _encode(tokenizer, text: str, max_length: int | None = None) -> list[int]:
    if max_length is None:
        return tokenizer.encode(text)
    return tokenizer.encode(text, truncation=True, max_length=max_length)


def _prepare(tokenizer, rec: dict, max_length: int):
    """Token ids and first scored token index for the conditional and the direct sequence."""
    output = rec.get("output", "")
    prompt = ifd_prompt(rec["instruction"], rec.get("input", "") or "")
    whole = prompt + output
    p_len = len(_encode(tokenizer, prompt, max_length))
    cond = _encode(tokenizer, whole, max_length)
    start = len(_encode(tokenizer, whole[: whole.rfind(output)]))
    direct = _encode(tokenizer, output, max_length - p_len + 1)
    return (cond, max(start, 1)), (direct, 1)


def _losses(model, seqs: list[tuple[list[int], int]], pad_id: int) -> list[float]:
    """Mean token loss per sequence over tokens t >= start (predicted from t-1); NaN if none."""
    import torch
    import torch.nn.functional as F

    base, dec, head = decoder_and_head(model)
    dev = next(model.parameters()).device
    T = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (s, start) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        labels[i, start: len(s)] = ids[i, start: len(s)]
        att[i, : len(s)] = 1
    ids, labels, att = ids.to(dev), labels.to(dev), att.to(dev)
    with torch.no_grad():
        h = dec(input_ids=ids, attention_mask=att).last_hidden_state
        _, logits, tgt, mask = scored_logits(base, head, h, labels)
        tot, cnt = row_sums(F.cross_entropy(logits, tgt, reduction="none"), mask, torch.float64)
    return [float(tot[i] / cnt[i]) if cnt[i] > 0 else float("nan") for i in range(len(seqs))]


def ifd_scores(model, tokenizer, records: list[dict], max_length: int = 1024,
               batch_size: int = 16, progress: bool = False) -> list[dict]:
    """[{ppl_cond, ppl_direct, ifd, status}] per Alpaca record (status: ok | empty_output |
    error | no_scored_tokens | zero_division)."""
    from tqdm.auto import tqdm

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[dict | None] = [None] * len(records)
    jobs = []  # (record index, kind, seq, start)
    for i, rec in enumerate(records):
        if (rec.get("output") or "") == "":
            out[i] = {"ppl_cond": float("nan"), "ppl_direct": float("nan"), "ifd": float("nan"),
                      "status": "empty_output"}
            continue
        try:
            (c, cs), (d, ds) = _prepare(tokenizer, rec, max_length)
        except Exception:  # noqa: BLE001 - reference semantics: (0, 0)
            out[i] = {"ppl_cond": 0.0, "ppl_direct": 0.0, "ifd": 0.0, "status": "error"}
            continue
        jobs += [(i, "cond", c, cs), (i, "direct", d, ds)]
    jobs.sort(key=lambda j: len(j[2]))
    loss: dict[tuple[int, str], float] = {}
    with tqdm(total=len(jobs), desc="IFD", unit="seq", disable=not progress) as bar:
        for s in range(0, len(jobs), batch_size):
            chunk = jobs[s: s + batch_size]
            try:
                vals = _losses(model, [(j[2], j[3]) for j in chunk], pad)
            except Exception:  # noqa: BLE001 - isolate the failing example(s)
                vals = []
                for j in chunk:
                    try:
                        vals += _losses(model, [(j[2], j[3])], pad)
                    except Exception:  # noqa: BLE001
                        vals.append(None)
            for j, v in zip(chunk, vals):
                loss[(j[0], j[1])] = v
            bar.update(len(chunk))
    for i in range(len(records)):
        if out[i] is not None:
            continue
        lc, ld = loss.get((i, "cond")), loss.get((i, "direct"))
        if lc is None or ld is None:
            out[i] = {"ppl_cond": 0.0, "ppl_direct": 0.0, "ifd": 0.0, "status": "error"}
            continue
        pc, pd = math.exp(lc) if lc == lc else float("nan"), math.exp(ld) if ld == ld else float("nan")
        if pc != pc or pd != pd:
            out[i] = {"ppl_cond": pc, "ppl_direct": pd, "ifd": float("nan"), "status": "no_scored_tokens"}
        elif pd == 0:
            out[i] = {"ppl_cond": pc, "ppl_direct": pd, "ifd": 0.0, "status": "zero_division"}
        else:
            out[i] = {"ppl_cond": pc, "ppl_direct": pd, "ifd": pc / pd, "status": "ok"}
    return out  # type: ignore[return-value]


def reference_ifd_scores(model, tokenizer, records: list[dict], max_length: int = 1024) -> list[dict]:
    """The reference's batch-size-1 loop (full logits, HF's own loss), for checking."""
    import torch

    dev = next(model.parameters()).device
    res = []
    for rec in records:
        output = rec.get("output", "")
        prompt = ifd_prompt(rec["instruction"], rec.get("input", "") or "")
        if output == "":
            res.append({"ppl_cond": float("nan"), "ppl_direct": float("nan"), "ifd": float("nan")})
            continue
        whole = prompt + output
        p_len = len(tokenizer.encode(prompt, truncation=True, max_length=max_length))
        with torch.no_grad():
            ids = torch.tensor([tokenizer.encode(output, truncation=True, max_length=max_length - p_len + 1)], device=dev)
            ppl_d = torch.exp(model(ids, labels=ids).loss).item()
            ids = torch.tensor([tokenizer.encode(whole, truncation=True, max_length=max_length)], device=dev)
            start = len(tokenizer.encode(whole[: whole.rfind(output)]))
            labels = ids.clone()
            labels[0, :start] = -100
            ppl_c = torch.exp(model(ids, labels=labels).loss).item()
        res.append({"ppl_cond": ppl_c, "ppl_direct": ppl_d, "ifd": ppl_c / ppl_d if ppl_d else 0.0})
    return res


@dataclass
class IFDConfig(SelectorConfig):
    proxy: str = "smollm2-135m-instruct"  # paper: gpt2
    max_length: int = 1024
    batch_size: int = 16
    threshold: float = 1.0  # keep IFD < threshold


def filter_and_rank(ifd: np.ndarray, k: int, threshold: float, seed: int) -> tuple[list[int], dict]:
    finite = np.isfinite(ifd)
    keep = finite & (ifd < threshold)
    report = {"nan": int((~finite).sum()), "zero": int((finite & (ifd == 0)).sum()),
              "at_or_above_threshold": int((finite & (ifd >= threshold)).sum()),
              "survivors": int(keep.sum())}
    masked = np.where(keep, ifd, np.nan)
    order = [int(i) for i in rank_by_score(masked, seed) if keep[i]]
    chosen = order[:k]
    report["short_by"] = max(0, k - len(chosen))
    return chosen, report


def _report_text(r: dict, threshold: float) -> str:
    s = (f"filtered {r['nan']} NaN and {r['at_or_above_threshold']} with IFD >= {threshold:g}; "
         f"{r['survivors']} survive ({r['zero']} with IFD 0 from scoring errors)")
    if r["short_by"]:
        s += f"; only {r['survivors']} survivors: taking all, {r['short_by']} short of the budget"
    return s


class _IFDBase(Selector):
    config_cls = IFDConfig
    needs = ("proxy",)
    cost_class = "proxy-forward"

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict | None:
        P = model_params(self.config.proxy)
        if not P:
            return None
        return {"what": f"IFD pass of {self.config.proxy} (two forward passes per example)",
                "flops": forward_flops(P, n, min(tokens, self.config.max_length), 2.0),
                "kind": "forward", "shared": f"IFD pass of {self.config.proxy}"}

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"proxy": tiny_model, "max_length": 64, "batch_size": 8}

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        t0 = time.perf_counter()
        res = sharded_ifd_scores(pool.rows, self.config, ctx)
        self._details = res
        ctx.notes["ifd_status"] = {s: sum(r["status"] == s for r in res)
                                   for s in sorted({r["status"] for r in res})}
        ctx.notes["score_seconds"] = time.perf_counter() - t0
        return np.array([r["ifd"] for r in res], dtype=np.float64)


IFD_SHARD_SIZE = 1024  # examples per resumable shard (does not change any score)
_STATUS = ("ok", "empty_output", "error", "no_scored_tokens", "zero_division")


def score_ifd_shards(rows: list[dict], proxy: str, max_length: int, batch_size: int,
                     shard_dir, shard_size: int = IFD_SHARD_SIZE, device: str = "cpu",
                     rank: int = 0, world: int = 1, progress: bool = False) -> None:
    """Score the IFD shards rank `rank` of `world` owns and that are not written yet."""
    store = ShardStore(shard_dir)
    spans = ranges(len(rows), shard_size)
    todo = store.todo(len(spans), rank, world)
    if not todo:
        return
    t_load = time.perf_counter()
    tok = load_tokenizer(proxy)
    model = load_model(proxy, device).eval()
    load_s = time.perf_counter() - t_load
    for i in todo:
        s, e = spans[i]
        t0 = time.perf_counter()
        res = ifd_scores(model, tok, rows[s:e], max_length, batch_size, progress=progress)
        store.write(i, **{k: np.array([r[k] for r in res], dtype=np.float64)
                          for k in ("ppl_cond", "ppl_direct", "ifd")},
                    status=np.array([_STATUS.index(r["status"]) for r in res], dtype=np.int8),
                    seconds=np.array([time.perf_counter() - t0 + load_s]))
        load_s = 0.0


def sharded_ifd_scores(rows: list[dict], cfg: IFDConfig, ctx: SelectionContext) -> list[dict]:
    """IFD for every row through resumable shards, in this process or under the launcher.

    Shards live in ``runs/<exp>/shards/ifd-<h8>``, keyed by what decides the scores (proxy,
    max length, pool), so every ratio and both IFD selectors share them; a crash loses at
    most the shard in progress."""

    with tempfile.TemporaryDirectory() as tmpd:
        key = stable_hash("ifd", cfg.proxy, cfg.max_length, ctx.pool_key or len(rows))
        folder = Path(ctx.shard_root) / f"ifd-{key}" if ctx.shard_root else Path(tmpd) / "ifd"
        store = ShardStore(folder)
        n_shards = len(ranges(len(rows), IFD_SHARD_SIZE))
        built_here = bool(store.missing(n_shards))
        if store.missing(n_shards):
            if uses_launcher(ctx.launch, "score"):
                job = folder / "job"
                write_job_rows(job / "rows.jsonl", rows)
                run_workers("ifd", {"rows_file": str(job / "rows.jsonl"), "proxy": cfg.proxy,
                                    "max_length": cfg.max_length, "batch_size": cfg.batch_size,
                                    "shard_dir": str(folder), "shard_size": IFD_SHARD_SIZE,
                                    "device": ctx.device}, ctx.launch, job, ctx.log)
            else:
                score_ifd_shards(rows, cfg.proxy, cfg.max_length, cfg.batch_size, folder,
                                 IFD_SHARD_SIZE, ctx.device, progress=ctx.progress)
        missing = store.missing(n_shards)
        if missing:
            raise RuntimeError(f"IFD shards {missing} missing in {folder}")
        out: list[dict] = []
        seconds = 0.0
        for i in range(n_shards):
            sh = store.read(i)
            seconds += float(sh["seconds"][0]) if "seconds" in sh else 0.0
            out += [{"ppl_cond": float(a), "ppl_direct": float(b), "ifd": float(c),
                     "status": _STATUS[int(d)]}
                    for a, b, c, d in zip(sh["ppl_cond"], sh["ppl_direct"], sh["ifd"], sh["status"])]
        if ctx.shard_root:
            P = model_params(cfg.proxy)
            ctx.shared(f"shards/ifd-{key}", f"IFD pass ({cfg.proxy}: PPL(y|x) and PPL(y))",
                       seconds, built_here, forward_flops(P, len(rows), 2 * 180.0) if P else None)
        return out


@SELECTORS.register("ifd", "superfiltering")
class IFD(_IFDBase):
    """Superfiltering: top IFD among IFD < 1."""

    paper_name = "Superfiltering"
    reference = "arXiv 2402.00530; tianyi-lab/Superfiltering"
    report_rank = 20

    description = "Superfiltering IFD (proxy PPL(y|x)/PPL(y)), keep IFD<1, top by IFD"

    def select(self, pool, ratio, ctx, scores=None) -> Selection:
        k = budget(ratio, len(pool))
        scores = self.score(pool, ctx) if scores is None else scores
        chosen, rep = filter_and_rank(scores, k, self.config.threshold, ctx.seed)
        return Selection(chosen, scores, {"budget": k, "filter": rep,
                                          "short_by": rep["short_by"],
                                          "filter_report": _report_text(rep, self.config.threshold)})


@dataclass
class IFDDiverseConfig(IFDConfig):
    """Superfiltering.D as released (tianyi-lab/Superfiltering@f0764afa536ec910b994d1d6aa2b8833
    54505f4f, ``code_diversity_fla/do_fla.py`` with ``scripts/optional_select_data_plus_
    diversity.sh`` and the README's 20% -> 2%)."""

    candidate_multiple: float = 10.0  # facility location over the top (multiple x budget) by IFD
    kernel: str = "submodlib-euclidean"  # submodlib-euclidean (theirs) | cosine (shifted to [0, 2])
    embed_batch_size: int = 64
    embed_max_length: int = 512  # their tokenizer call truncates at MiniLM's model_max_length


def submodlib_euclidean_kernel(E: np.ndarray) -> np.ndarray:
    """submodlib's dense ``metric="euclidean"`` kernel (decile-team/submodlib@72ae33a,
    ``cpp/utils/helper.cpp``: ``euclidean_similarity``, ``create_square_kernel_dense``):
    s_ij = exp(-||x_i - x_j|| / D) with D the embedding dimension (the distance itself, not
    its square), s_ii = 1, stored as float32."""
    E = np.asarray(E, dtype=np.float64)
    sq = np.einsum("ij,ij->i", E, E)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (E @ E.T), 0.0)
    K = np.exp(-np.sqrt(d2) / E.shape[1]).astype(np.float32)
    np.fill_diagonal(K, 1.0)
    return K


def facility_location_greedy(sim: np.ndarray, k: int) -> list[int]:
    """Lazy greedy maximisation of f(S) = sum_i max(0, max_{j in S} sim[i, j]), as
    submodlib's ``LazyGreedyOptimizer`` on ``FacilityLocationFunction`` (stopIfZeroGain and
    stopIfNegativeGain off): a max-heap of (bound, index), so equal bounds pop the larger
    index first; the popped element's fresh gain is accepted when >= the next bound."""

    sim = np.asarray(sim)
    n = sim.shape[0]
    k = min(k, n)
    best = np.zeros(n)
    heap = [(-float(np.maximum(sim[:, j], 0).sum()), -j) for j in range(n)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while len(chosen) < k and heap:
        _, mj = heapq.heappop(heap)
        j = -mj
        gain = float(np.maximum(sim[:, j] - best, 0).sum())
        if not heap or gain >= -heap[0][0]:
            chosen.append(j)
            best = np.maximum(best, sim[:, j])
        else:
            heapq.heappush(heap, (-gain, mj))
    return chosen


@SELECTORS.register("ifd-diverse", "superfiltering-d")
class IFDDiverse(_IFDBase):
    """Superfiltering.D: facility location (MiniLM embeddings) over the top IFD examples.

    As released: the top ``candidate_multiple`` x budget by IFD among IFD < 1 (their 20% ->
    2%: 10x), embeddings of ``instruction\ninput\noutput`` by all-MiniLM-L6-v2 (mean
    pooling, L2-normalised, truncated at 512 tokens; read through the pool's shared embedding
    shards of :mod:`.embedcache`, which kcenter, knn-density and embed-target use too, so one
    embedding pass serves them all), facility location on submodlib's
    euclidean kernel by lazy greedy. Differences: IFD ties among the candidates are ordered
    by the seeded tie-break (theirs: file order); the kernel is computed in numpy (float64,
    stored float32) rather than submodlib's float32 C++ loop, so near-equal gains may order
    differently in the last bits; ``kernel: cosine`` keeps selbench's earlier variant."""

    config_cls = IFDDiverseConfig
    paper_name = "Superfiltering.D"
    reference = "arXiv 2402.00530; tianyi-lab/Superfiltering@f0764af"
    report_rank = 21
    needs = ("proxy", "embeddings")
    description = ("Superfiltering.D: top 10x budget by IFD, facility location on MiniLM "
                   "embeddings with submodlib's euclidean kernel")

    def select(self, pool, ratio, ctx, scores=None) -> Selection:
        c = self.config
        if c.kernel not in ("submodlib-euclidean", "cosine"):
            raise ValueError(f"ifd-diverse kernel must be submodlib-euclidean or cosine, got {c.kernel!r}")
        k = budget(ratio, len(pool))
        scores = self.score(pool, ctx) if scores is None else scores
        n_cand = min(len(pool), max(k, math.ceil(c.candidate_multiple * k)))
        cand, rep = filter_and_rank(scores, n_cand, c.threshold, ctx.seed)
        # through the pool's shared embedding shards (embedcache: kcenter, knn-density, ...)
        E = pool_embeddings(pool.rows, ctx, "instruction-input-output", c.embed_max_length,
                            c.embed_batch_size, indices=cand)
        if c.kernel == "cosine":
            sim = E @ E.T + 1.0  # cosine shifted to [0, 2]
        else:
            sim = submodlib_euclidean_kernel(E)
        picked = [cand[j] for j in facility_location_greedy(sim, k)]
        short = max(0, k - len(picked))
        rep = {**rep, "candidates": len(cand), "short_by": short}
        return Selection(picked, scores, {"budget": k, "filter": rep, "short_by": short,
                                          "kernel": c.kernel,
                                          "filter_report": _report_text(rep, c.threshold)
                                          + f"; facility location ({c.kernel}) over "
                                          f"{len(cand)} candidates"})
