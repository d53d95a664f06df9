"""Judging one model pair: build both-order items, fill from cache, call the judge for the
rest, parse, and reduce to W/T/L per eval set and pooled."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..runs import DamagedStage
from .base import Completion, CompletionCache, Judge, JudgeItem, item_key
from .pairwise import pairwise_outcome, summarize_rows
from .parse import parse_scores


def _index_answers(rows: list[dict], es: str, source: str, hint: str = "") -> dict[str, dict]:
    out: dict[str, dict] = {}
    dup = []
    for r in rows:
        if not isinstance(r, dict) or "id" not in r or "answer" not in r:
            raise DamagedStage(f"{source}: eval set '{es}': a line without 'id'/'answer' "
                               f"({str(r)[:80]}){hint}")
        if r["id"] in out:
            dup.append(r["id"])
        out[r["id"]] = r
    if dup:
        raise DamagedStage(f"{source}: eval set '{es}': {len(dup)} prompt(s) answered twice "
                           f"(ids {_ids(dup)}){hint}")
    return out


_REBUILD = ("; this generate stage is incomplete: delete its folder and rerun the same "
            "command to regenerate it")


def _ids(ids: list[str], n: int = 8) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:n])) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def _where(src: str | None, es: str) -> str:
    return f"{src}/{es}.jsonl" if src else f"the answers of eval set '{es}'"


def build_items(answers_a: dict[str, list[dict]], answers_b: dict[str, list[dict]],
                expected: dict[str, list[str]] | None = None,
                sources: tuple[str | None, str | None] = (None, None)) -> list[dict]:
    """One record per (eval set, prompt, order). answers_*: set -> [{id, prompt, answer, reference?}].

    Every prompt must have exactly one answer on both sides, and with ``expected``
    (set -> eval prompt ids) exactly the expected prompts; otherwise :class:`DamagedStage`
    names the file (``sources``: the two answer folders) and the missing ids. Nothing is
    ever compared silently on fewer prompts."""
    recs = []
    hint = _REBUILD if any(sources) else ""  # answer folders of generate stages
    for es in (list(expected) if expected is not None else list(answers_a)):
        idx = []
        for answers, src in zip((answers_a, answers_b), sources):
            if es not in answers:
                raise DamagedStage(f"{_where(src, es)}: no answers for eval set '{es}'{hint}")
            idx.append(_index_answers(answers[es], es, _where(src, es), hint))
        by_a, by_b = idx
        want = list(expected[es]) if expected is not None else list(dict.fromkeys([*by_a, *by_b]))
        wanted = set(want)
        for by, src in zip(idx, sources):
            missing = [i for i in want if i not in by]
            if missing:
                raise DamagedStage(f"{_where(src, es)}: {len(missing)} of {len(want)} eval prompts "
                                   f"have no answer (ids {_ids(missing)}){hint}")
            extra = [i for i in by if i not in wanted]
            if extra:
                raise DamagedStage(f"{_where(src, es)}: answers for prompts that are not in eval "
                                   f"set '{es}' (ids {_ids(extra)}){hint}")
        for pid in want:
            ra, rb = by_a[pid], by_b[pid]
            for order in ("ab", "ba"):
                a1, a2 = (ra["answer"], rb["answer"]) if order == "ab" else (rb["answer"], ra["answer"])
                recs.append({"eval_set": es, "id": ra["id"], "order": order,
                             "item": JudgeItem(ra["prompt"], a1, a2, ra.get("reference"),
                                               {"label": f"{es}/{ra['id']}/{order}"})})
    return recs


def secret_values() -> list[str]:
    """Values of environment variables that hold secrets (API keys, tokens), to scrub."""
    out = []
    for k, v in os.environ.items():
        if v and len(v) >= 8 and any(w in k.upper() for w in ("KEY", "TOKEN", "SECRET", "PASSWORD")):
            out.append(v)
    return sorted(set(out), key=len, reverse=True)


def scrub_secrets(text: str, extra: list[str] | tuple = ()) -> str:
    for v in [*extra, *secret_values()]:
        if v and len(v) >= 4:
            text = text.replace(v, "***")
    return text


def _judge_secret(judge: Judge) -> list[str]:
    env = getattr(judge.config, "api_key_env", None)
    v = os.environ.get(env) if env else None
    return [v] if v else []


def judge_items(judge: Judge, recs: list[dict], cache: CompletionCache, progress: bool = True) -> dict:
    """Fill the cache for every record; identical requests (same key) are sent once.

    A completion that cannot be stored is kept in memory and retried after the batch; if
    it still fails, the error names the item and the cache file. An exception from the
    backend is re-raised with every secret value scrubbed from its message."""
    from tqdm.auto import tqdm

    todo: list[dict] = []
    seen: set[str] = set()
    for r in recs:
        r["key"] = item_key(judge, r["item"])
        if cache.get(r["key"]) is None and r["key"] not in seen:
            seen.add(r["key"])
            todo.append(r)
    bar = tqdm(total=len(todo), desc=f"judge {judge.name}", unit="item", disable=not progress or not todo)
    unsaved: list[tuple[dict, Completion, Exception]] = []

    def meta_of(r: dict) -> dict:
        return {"label": r["item"].meta["label"], "judge": judge.name}

    def done(i: int, comp: Completion) -> None:
        r = todo[i]
        try:
            cache.put(r["key"], comp, meta_of(r))
        except Exception as e:  # noqa: BLE001 - paid for: keep it and retry after the batch
            unsaved.append((r, comp, e))
        bar.update(1)

    try:
        if todo:
            judge.complete_many([r["item"] for r in todo], done)
    except Exception as e:  # noqa: BLE001
        _flush_unsaved(unsaved, cache, meta_of)
        msg = scrub_secrets(str(e), _judge_secret(judge))
        if msg != str(e):
            raise type(e)(msg) if _rebuildable(e) else RuntimeError(msg) from None
        raise
    finally:
        bar.close()
    _flush_unsaved(unsaved, cache, meta_of)
    return {"cached": len(recs) - len(todo), "new": len(todo)}


def _rebuildable(e: Exception) -> bool:
    try:
        type(e)("x")
        return True
    except Exception:  # noqa: BLE001
        return False


def _flush_unsaved(unsaved: list, cache: CompletionCache, meta_of) -> None:
    failed = []
    for r, comp, first in unsaved:
        try:
            cache.put(r["key"], comp, meta_of(r))
        except Exception as e:  # noqa: BLE001
            failed.append((r, e))
    unsaved.clear()
    if failed:
        r, e = failed[0]
        label = r["item"].meta["label"]
        if isinstance(e, OSError):
            raise OSError(e.errno, f"{len(failed)} judged item(s) could not be stored in "
                                   f"{cache.path} (first: {label}): {e.strerror or e}") from None
        raise RuntimeError(f"{len(failed)} judged item(s) could not be stored in {cache.path} "
                           f"(first: {label}): {type(e).__name__}: {e}") from None


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
    for key in dict.fromkeys(r["key"] for r in recs):  # an item sent once is paid once
        e = cache.get(key) or {}
        pt += int((e.get("usage") or {}).get("prompt_tokens", 0))
        ct += int((e.get("usage") or {}).get("completion_tokens", 0))
    return {"prompt_tokens": pt, "completion_tokens": ct}


def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            line = json.dumps(r, ensure_ascii=False)
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from the API: store it escaped
                line = json.dumps(r, ensure_ascii=True)
            f.write(line + "\n")
