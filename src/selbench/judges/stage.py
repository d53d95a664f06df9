"""Judging one model pair: build both-order items, fill from cache, call the judge for the
rest, parse, and reduce to W/T/L per eval set and pooled."""
from __future__ import annotations

import json
from pathlib import Path

from .base import CompletionCache, Completion, Judge, JudgeItem, item_key
from .pairwise import pairwise_outcome, summarize_rows
from .parse import parse_scores


def build_items(answers_a: dict[str, list[dict]], answers_b: dict[str, list[dict]]) -> list[dict]:
    """One record per (eval set, prompt, order). answers_*: set -> [{id, prompt, answer, reference?}]."""
    recs = []
    for es in answers_a:
        by_b = {r["id"]: r for r in answers_b[es]}
        for ra in answers_a[es]:
            rb = by_b[ra["id"]]
            for order in ("ab", "ba"):
                a1, a2 = (ra["answer"], rb["answer"]) if order == "ab" else (rb["answer"], ra["answer"])
                recs.append({"eval_set": es, "id": ra["id"], "order": order,
                             "item": JudgeItem(ra["prompt"], a1, a2, ra.get("reference"),
                                               {"label": f"{es}/{ra['id']}/{order}"})})
    return recs


def judge_items(judge: Judge, recs: list[dict], cache: CompletionCache, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    todo = []
    for r in recs:
        r["key"] = item_key(judge, r["item"])
        if cache.get(r["key"]) is None:
            todo.append(r)
    bar = tqdm(total=len(todo), desc=f"judge {judge.name}", unit="item", disable=not progress or not todo)

    def done(i: int, comp: Completion) -> None:
        r = todo[i]
        cache.put(r["key"], comp, {"label": r["item"].meta["label"], "judge": judge.name})
        bar.update(1)

    if todo:
        judge.complete_many([r["item"] for r in todo], done)
    bar.close()
    return {"cached": len(recs) - len(todo), "new": len(todo)}


def score_rows(rows: list[dict]) -> list[dict]:
    """Parse both raw completions of each per-prompt row and set its outcome (in place)."""
    for r in rows:
        r["scores_ab"] = parse_scores(r.get("raw_ab"))
        r["scores_ba"] = parse_scores(r.get("raw_ba"))
        r["outcome"] = pairwise_outcome(r["scores_ab"], r["scores_ba"])
    return rows


def reduce(recs: list[dict], cache: CompletionCache, seed: int = 0) -> tuple[list[dict], dict]:
    """Per-prompt rows (raw + parsed, both orders) and the summary per set and pooled."""
    by_prompt: dict[tuple[str, str], dict] = {}
    for r in recs:
        e = cache.get(r["key"])
        row = by_prompt.setdefault((r["eval_set"], r["id"]), {"eval_set": r["eval_set"], "id": r["id"]})
        row[f"raw_{r['order']}"] = e["text"] if e else None
    rows = score_rows(list(by_prompt.values()))
    return rows, summarize_rows(rows, seed)


def usage_of(recs: list[dict], cache: CompletionCache) -> dict:
    """Tokens spent on this comparison's items (cached items included: what they cost once)."""
    pt = ct = 0
    for r in recs:
        e = cache.get(r["key"]) or {}
        pt += int((e.get("usage") or {}).get("prompt_tokens", 0))
        ct += int((e.get("usage") or {}).get("completion_tokens", 0))
    return {"prompt_tokens": pt, "completion_tokens": ct}


def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
