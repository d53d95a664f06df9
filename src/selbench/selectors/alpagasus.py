"""LLM rating, AlpaGasus-style (arXiv 2307.08701): a judge rates every pool row 0-5.

The rating prompt is the released one (gpt4life/alpagasus@95ad3e5, ``rating/
chatgpt_rating.py``), sent as a chat with that file's system message and, as the user
message, ``"###Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:\\n
{output}\\n\\n"`` followed by the accuracy instruction (``dimension: accuracy``, the paper's)
or the commented-out helpfulness one (``dimension: helpfulness``); the input section is
there even when the input is empty, as released. Any configured LLM judge completes it
(``judge``: a judge name or YAML, default the run's first judge; ``judge_overrides``
replaces keys of its YAML for the rating, e.g. ``{max_new_tokens: 64}``). The offline
reference-similarity judge is not an LLM and cannot rate: a clear error, and a plan problem.

Parsing (the release's ``parse_score``): the first line as a number, else the number after
``score:`` (any case); a value outside [0, 5] or no number at all is unparsed (the release
scores it -1, i.e. never selected; here NaN, ranked last and never kept by the threshold).
The release's ``Score:`` branch reads one character only, a bug not reproduced.

Selection: ``mode: threshold`` (the paper's): the rows rated >= ``threshold`` (4.5), best
first, at most ``ceil(ratio * N)``; fewer survivors are all taken and the shortfall is
reported (``short_by``), so at ratio 1 the selection is the whole filtered set.
``mode: topk``: the top ``ceil(ratio * N)`` by rating. Ratings are coarse (AlpaGasus's
are mostly 3.5-5), so ties are many: they are ordered by selbench's seeded tie-break.

Ratings are cached per row like judge calls (:class:`~selbench.judges.base.
CompletionCache`, keyed by the judge's identity and the exact messages) in
``runs/<exp>/shards/ratings/<judge>/cache.jsonl``, so every ratio, both modes and any pool
sharing rows reuse them, and a crash loses nothing answered; each selection records the
rating pass as shared work (its judge calls and seconds), so a study charges it once, and
``bench plan`` shows its judge calls and, where the judge YAML has prices, their cost.
"""
from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, stable_hash
from ..judges import load_judge
from ..judges.base import CompletionCache, Judge, JudgeItem
from ..judges.stage import judge_items
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget, rank_by_score

SYSTEM = ("We would like to request your feedback on the performance of AI assistant in "
          "response to the instruction and the given input displayed following.")
CRITERIA = {
    "accuracy": ("Please rate according to the accuracy of the response to the instruction "
                 "and the input. Each assistant receives a score on a scale of 0 to 5, where a "
                 "higher score indicates higher level of the accuracy. Please first output a "
                 "single line containing value indicating the scores. In the subsequent line, "
                 "please provide a comprehensive explanation of your evaluation, avoiding any "
                 "potential bias. \n\n"),
    "helpfulness": ("Please rate according to the helpfulness of the response to the "
                    "instruction and the input. Each assistant receives an score on a scale of "
                    "0 to 5, where a higher score indicates higher level of the helpfulness. "
                    "Please first output a single line containing value indicating the scores. "
                    "In the subsequent line, please provide a comprehensive explanation of your "
                    "evaluation, avoiding any potential bias. \n\n"),
}
TRIPLET = "###Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}\n\n"
MODES = ("threshold", "topk")
PROMPT_OVERHEAD_TOKENS = 110  # system message + template + criteria, ~4 characters a token


@dataclass
class AlpaGasusConfig(SelectorConfig):
    judge: str | None = None
    """Judge that rates (a name or YAML; None: the run's first judge)."""
    judge_overrides: dict[str, Any] = field(default_factory=dict)
    """Keys of the judge's YAML replaced for rating (e.g. {max_new_tokens: 64})."""
    dimension: str = "accuracy"
    """accuracy (the paper's prompt) | helpfulness (the release's other prompt)."""
    mode: str = "threshold"
    """threshold (rating >= threshold, best first, up to the budget) | topk."""
    threshold: float = 4.5


def rating_messages(row: dict, dimension: str = "accuracy") -> list[dict[str, str]]:
    if dimension not in CRITERIA:
        raise ValueError(f"alpagasus: dimension must be one of {', '.join(CRITERIA)}, got {dimension!r}")
    user = TRIPLET.format(instruction=row["instruction"], input=row.get("input", "") or "",
                          output=row["output"]) + CRITERIA[dimension]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_NUM = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*$")
_AFTER = re.compile(r"score\s*:\s*(-?\d+(?:\.\d+)?)", re.I)


def parse_rating(text: str | None) -> float | None:
    """The 0-5 rating in a completion (first line a number, else after 'score:'), or None."""
    if not text:
        return None
    first = text.strip().split("\n")[0]
    m = _NUM.match(first)
    if m is None:
        m = _AFTER.search(text)
    if m is None:
        return None
    v = float(m.group(1))
    return v if 0.0 <= v <= 5.0 else None


@SELECTORS.register("alpagasus", "llm-rating")
class AlpaGasus(Selector):
    """Judge-rated quality 0-5 per pool row (AlpaGasus prompt); threshold or top-k."""

    config_cls = AlpaGasusConfig
    description = "LLM rating (AlpaGasus): a judge rates each row 0-5; keep >= 4.5 (or top-k)"
    paper_name = "AlpaGasus"
    reference = "arXiv 2307.08701; gpt4life/alpagasus@95ad3e5 rating/chatgpt_rating.py"
    family = "baseline"
    report_rank = 6
    needs = ("judge",)
    cost_class = "judge-calls"

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"judge": "hf-smollm2", "mode": "topk",
                "judge_overrides": {"model": tiny_model, "max_new_tokens": 4, "batch_size": 8}}

    # ------------------------------------------------------------------ the judge
    def _check(self) -> None:
        c = self.config
        if c.mode not in MODES:
            raise ValueError(f"alpagasus: mode must be one of {', '.join(MODES)}, got {c.mode!r}")
        if c.dimension not in CRITERIA:
            raise ValueError(f"alpagasus: dimension must be one of {', '.join(CRITERIA)}, got {c.dimension!r}")

    def context_identity(self, ctx: SelectionContext) -> dict:
        """The rating judge's identity (its YAML's verdict-changing settings): the run's
        first judge when none is named, so a run with another judge re-rates."""
        name = self.config.judge or next(iter(ctx.judges), None)
        if name is None:
            return {}
        try:
            judge = ctx.judges.get(name) or load_judge(name)
            ident = judge.cache_identity()
        except Exception:  # noqa: BLE001 - keyed by name; rating raises the clear error
            ident = {"unreadable": str(name)}
        return {"rating_judge": {"name": str(name), **ident}}

    def resolve_judge(self, judges: dict[str, Judge]) -> Judge:
        """The rating judge: ``judge`` from the run's judges or loaded, else the run's first."""
        c = self.config
        if c.judge is None:
            if not judges:
                raise ValueError("alpagasus needs a judge to rate the pool: set "
                                 "selector_params.judge (e.g. hf-smollm2, vllm-local, gpt-5.1) "
                                 "or give the run a judge")
            judge = next(iter(judges.values()))
        else:
            judge = judges.get(c.judge) or load_judge(c.judge)
        if c.judge_overrides:
            known = {f.name for f in dataclasses.fields(judge.config)}
            bad = sorted(set(c.judge_overrides) - known)
            if bad:
                raise ConfigError(f"alpagasus: judge_overrides {bad} are not keys of judge "
                                  f"'{judge.name}' ({type(judge.config).__name__}: "
                                  f"{', '.join(sorted(known))})")
            judge = type(judge)(judge.name, dataclasses.replace(judge.config, **c.judge_overrides),
                                judge.source)
        if not judge.completes_prompts:
            raise ValueError(f"alpagasus: judge '{judge.name}' is {judge.kind}, not an LLM: it "
                             f"cannot rate pool rows (it only compares answers to a reference); "
                             f"set selector_params.judge to an LLM judge (hf-smollm2, "
                             f"vllm-local, gpt-5.1, ...)")
        return judge

    def plan_problems(self, judges: dict[str, Any]) -> list[tuple[str, str]]:
        self._plan_judges = judges
        try:
            self._check()
            judge = self.resolve_judge(judges)
        except (ValueError, ConfigError) as e:
            return [("error", f"selector '{self.name}': {e}")]
        return [(kind, f"selector '{self.name}' (rates the pool): {msg}") for kind, msg in judge.needs()]

    def estimate(self, n: int, tokens: float, seed: int = 0) -> dict | None:
        try:
            judge = self.resolve_judge(getattr(self, "_plan_judges", {}))
        except (ValueError, ConfigError):
            judge = None
        name = judge.name if judge is not None else (self.config.judge or "the run's first judge")
        est: dict[str, Any] = {"what": f"AlpaGasus {self.config.dimension} ratings of {n} rows by "
                                       f"judge {name}", "flops": None, "kind": "forward",
                               "shared": f"AlpaGasus {self.config.dimension} ratings by {name}",
                               "judge_calls": n}
        if judge is not None:
            conc = getattr(judge.config, "concurrency", 1) or 1
            est["seconds"] = n * (3.0 / conc)
            pp = getattr(judge.config, "price_per_mtok_prompt", None)
            pc = getattr(judge.config, "price_per_mtok_completion", None)
            if pp is not None or pc is not None:
                comp = min(getattr(judge.config, "max_tokens", 120) or 120, 120)
                est["cost_usd"] = n * ((tokens + PROMPT_OVERHEAD_TOKENS) * (pp or 0)
                                       + comp * (pc or 0)) / 1e6
                est["price_source"] = getattr(judge.config, "price_source", None)
        return est

    # ------------------------------------------------------------------ rating
    def ratings(self, pool, ctx: SelectionContext) -> np.ndarray:
        """The rating of every pool row (NaN: unparsed), from the cache or the judge."""
        self._check()
        c = self.config
        judge = self.resolve_judge(ctx.judges)
        recs = [{"item": JudgeItem("", "", "", None, {"label": f"rate/{r['id']}"},
                                   messages=rating_messages(r, c.dimension))} for r in pool.rows]
        root = ctx.shard_root or (ctx.run_dir.shard_root if ctx.run_dir is not None else None)
        with tempfile.TemporaryDirectory() as tmpd:
            folder = Path(root) / "ratings" / judge.name if root else Path(tmpd)
            cache = CompletionCache(folder / "cache.jsonl")
            t0 = time.perf_counter()
            counts = judge_items(judge, recs, cache, progress=ctx.progress)
            elapsed = time.perf_counter() - t0
            texts = [(cache.get(r["key"]) or {}).get("text") for r in recs]
            # seconds and calls of the rating pass of this pool, summed over the runs that built it
            ident = {k: v for k, v in judge.cache_identity().items() if k != "prompt"}
            pass_key = stable_hash("alpagasus", ident, c.dimension,
                                   ctx.pool_key or [r["key"] for r in recs], n=12)
            side = folder / f"pass-{pass_key}.json"
            rec = json.loads(side.read_text()) if side.exists() else {"seconds": 0.0, "calls": 0}
            if counts["new"]:
                rec = {"seconds": rec["seconds"] + elapsed, "calls": rec["calls"] + counts["new"]}
                side.write_text(json.dumps(rec))
        ratings = np.array([v if (v := parse_rating(t)) is not None else np.nan for t in texts])
        if root:
            ctx.shared(f"ratings/{judge.name}-{pass_key}", f"AlpaGasus {c.dimension} ratings of "
                       f"{len(pool)} rows by judge {judge.name}", rec["seconds"],
                       bool(counts["new"]), None, judge_calls=len(pool))
        ok = ratings[np.isfinite(ratings)]
        ctx.notes["judge_calls"] = len(pool)  # what the selection needs, whoever paid for it
        ctx.notes["judge_calls_made"] = counts["new"]
        ctx.notes["ratings"] = {"judge": judge.name, "judge_model": judge.judge_model,
                                "dimension": c.dimension, "parsed": int(len(ok)),
                                "unparsed": int(len(pool) - len(ok)),
                                "mean": float(ok.mean()) if len(ok) else None,
                                "at_or_above_threshold": int((ok >= c.threshold).sum())}
        return ratings

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        return self.ratings(pool, ctx)

    def select(self, pool, ratio, ctx: SelectionContext, scores=None) -> Selection:
        self._check()
        c = self.config
        k = budget(ratio, len(pool))
        r = self.ratings(pool, ctx) if scores is None else np.asarray(scores, np.float64)
        keep = np.isfinite(r) if c.mode == "topk" else (np.isfinite(r) & (r >= c.threshold))
        order = [int(i) for i in rank_by_score(np.where(keep, r, np.nan), ctx.seed) if keep[i]]
        chosen = order[:k]
        rep = ctx.notes.get("ratings", {})
        info = {"budget": k, "mode": c.mode, "kept": int(keep.sum()),
                "filter_report": (f"{rep.get('parsed', '?')} rows rated by {rep.get('judge', '?')} "
                                  f"({rep.get('unparsed', '?')} unparsed); "
                                  + (f"{int(keep.sum())} rated >= {c.threshold:g}"
                                     if c.mode == "threshold" else "top-k by rating"))}
        if len(chosen) < k:
            info["short_by"] = k - len(chosen)
        if len(order) > k:
            info["truncated_from"] = len(order)
        return Selection(chosen, r, info)

