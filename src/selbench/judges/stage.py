"""Judging one model pair: build both-order items, fill from cache, call the judge for the
rest, parse, and reduce to W/T/L per eval set and pooled."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from ..runs import DamagedStage, DiskFull, is_disk_full
from .base import Completion, CompletionCache, Judge, JudgeItem, StopRequests, item_key
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

    Nothing answered is paid for twice. Each completion is appended to the cache as it
    arrives. When an append fails (a full disk), ``on_done`` raises :class:`StopRequests` so
    the backend sends no new request; answers already on their way are kept in memory. Once
    the backend has stopped, every unstored answer is written again: if that works (the
    failure was transient) judging goes on with the rest; if not, they are saved to a rescue
    file that the cache reads back on the next run (:meth:`CompletionCache.save_rescue`), and
    the error names the cache file, the rescue file and what to do. An exception from the
    backend is re-raised with every secret value scrubbed from its message (what was
    answered before it is stored or rescued first)."""
    from tqdm.auto import tqdm  # lazy: heavy

    todo: list[dict] = []
    seen: set[str] = set()
    for r in recs:
        r["key"] = item_key(judge, r["item"])
        if cache.get(r["key"]) is None and r["key"] not in seen:
            seen.add(r["key"])
            todo.append(r)
    bar = tqdm(total=len(todo), desc=f"judge {judge.name}", unit="item", disable=not progress or not todo)
    unsaved: list[tuple[dict, Completion]] = []  # answered, not (yet) in the cache
    answered: set[str] = set()
    state: dict = {"round": [], "failed": None}  # this round's records; the first failed put

    def meta_of(r: dict) -> dict:
        return {"label": r["item"].meta["label"], "judge": judge.name}

    def done(i: int, comp: Completion) -> None:
        r = state["round"][i]
        if r["key"] in answered:
            return
        answered.add(r["key"])
        bar.update(1)
        if state["failed"] is None:
            try:
                cache.put(r["key"], comp, meta_of(r))
                return
            except Exception as e:  # noqa: BLE001 - paid for: keep it, send nothing new
                state["failed"] = e
                unsaved.append((r, comp))
                raise StopRequests(f"the judge cache {cache.path} could not store an answer") from None
        unsaved.append((r, comp))  # arrived after the stop: kept

    try:
        while True:
            state["round"] = [r for r in todo if r["key"] not in answered]
            if not state["round"]:
                break
            try:
                judge.complete_many([r["item"] for r in state["round"]], done)
            except StopRequests:
                pass
            except BaseException as e:
                _keep(unsaved, cache, meta_of, state["failed"], raise_=False)
                if not isinstance(e, Exception):
                    raise
                msg = scrub_secrets(str(e), _judge_secret(judge))
                if msg != str(e):
                    raise type(e)(msg) if _rebuildable(e) else RuntimeError(msg) from None
                raise
            if state["failed"] is None:
                break  # everything the backend answered is stored
            _keep(unsaved, cache, meta_of, state["failed"])  # raises unless all are stored now
            state["failed"] = None  # the write failure was transient: judge the rest
    finally:
        bar.close()
    return {"cached": len(recs) - len(todo), "new": len(todo)}


def _rebuildable(e: Exception) -> bool:
    try:
        type(e)("x")
        return True
    except Exception:  # noqa: BLE001
        return False


def _keep(unsaved: list, cache: CompletionCache, meta_of, first: Exception | None,
          raise_: bool = True) -> None:
    """Store every answered-but-unstored completion: appended to the cache while that works,
    the rest saved to a rescue file. Unless everything reached the cache, raise (``raise_``)
    an error naming the cache file, where the rest went and what to do."""
    pending, unstorable, err = [], [], None
    for r, comp in unsaved:
        entry = {"key": r["key"], "text": comp.text, "usage": comp.usage, **meta_of(r)}
        if err is None:
            try:
                cache.put(r["key"], comp, meta_of(r))
                continue
            except OSError as e:
                err = e
            except Exception as e:  # noqa: BLE001 - e.g. a usage value that is not JSON
                unstorable.append((r, e))
                continue
        try:
            json.dumps(entry, ensure_ascii=True)
        except Exception as e:  # noqa: BLE001
            unstorable.append((r, e))
            continue
        pending.append(entry)
    unsaved.clear()
    rescue = cache.save_rescue(pending) if pending else None
    if not raise_ or not (pending or unstorable):
        return
    if pending:
        err = err if err is not None else first
        full = err is None or is_disk_full(err)
        code = getattr(err, "errno", None)
        what = (f"no space left on device while appending to the judge cache {cache.path}" if full
                else f"cannot append to the judge cache {cache.path} "
                     f"({os.strerror(code) if code else err})")
        kept = (f"{len(pending)} answered completion(s) that could not be stored were saved to "
                f"{rescue}, which the next run reads back" if rescue else
                f"{len(pending)} answered completion(s) could not be stored, not even in a "
                f"rescue file (tried {', '.join(map(str, cache.rescue_dirs()))}): they will be "
                f"asked again")
        text = (f"{what}: stopped sending requests at the first "
                f"answer that could not be stored; {kept}; free space and rerun the same command "
                f"(every stored answer is kept and never paid for again)")
        if full:
            raise DiskFull(errno.ENOSPC, text) from None
        raise OSError(code or errno.EIO, text) from None
    r, e = unstorable[0]
    raise RuntimeError(f"{len(unstorable)} judged item(s) could not be stored in {cache.path} "
                       f"(first: {r['item'].meta['label']}): {type(e).__name__}: {e}") from None


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
