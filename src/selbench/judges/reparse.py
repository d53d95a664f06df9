"""`bench judge --reparse`: re-apply the current parser to cached raw completions.

Each finished judge folder keeps both raw completions per prompt (judgments.jsonl); this
recomputes parsed scores, outcomes and summaries from them and rewrites judgments.jsonl
and result.json in place. No judge is called."""
from __future__ import annotations

import json
from pathlib import Path

from ..runs import atomic_write_text, judge_results
from .pairwise import summarize_rows
from .stage import score_rows


def reparse_folder(folder: Path) -> None:
    path = folder / "judgments.jsonl"
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    score_rows(rows)
    result = json.loads((folder / "result.json").read_text())
    result["summary"] = summarize_rows(rows, seed=result.get("seed", 0) or 0)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(folder / "result.json", json.dumps(result, indent=2, default=str))


def reparse_all(runs_dir: Path) -> int:
    n = 0
    for res in judge_results(runs_dir):
        reparse_folder(res.parent)
        n += 1
    return n
