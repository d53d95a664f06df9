"""`bench judge --reparse`: re-apply the current parser to cached raw completions.

Each finished judge folder keeps both raw completions per prompt (judgments.jsonl); this
recomputes parsed scores, outcomes and summaries from them and rewrites judgments.jsonl
and result.json in place. No judge is called."""
from __future__ import annotations

import json
from pathlib import Path

from .pairwise import bootstrap_pws, pairwise_outcome, position_consistency, summarize
from .parse import parse_scores


def summarize_rows(rows: list[dict], seed: int = 0) -> dict:
    summary = {}
    sets = sorted({r["eval_set"] for r in rows})
    for name, subset in [(s, [r for r in rows if r["eval_set"] == s]) for s in sets] + [("pooled", rows)]:
        outs = [r["outcome"] for r in subset]
        s = summarize(outs)
        s["ci95"] = bootstrap_pws(outs, seed=seed)
        s["position_consistency"] = position_consistency(
            (r.get("scores_ab"), r.get("scores_ba")) for r in subset)
        summary[name] = s
    return summary


def reparse_folder(folder: Path) -> None:
    path = folder / "judgments.jsonl"
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    for r in rows:
        r["scores_ab"] = parse_scores(r.get("raw_ab"))
        r["scores_ba"] = parse_scores(r.get("raw_ba"))
        r["outcome"] = pairwise_outcome(r["scores_ab"], r["scores_ba"])
    result = json.loads((folder / "result.json").read_text())
    result["summary"] = summarize_rows(rows, seed=result.get("seed", 0) or 0)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))


def reparse_all(runs_dir: Path) -> int:
    n = 0
    for res in sorted(Path(runs_dir).glob("*/judge/*/*/result.json")):
        if (res.parent / "DONE").exists():
            reparse_folder(res.parent)
            n += 1
    return n
