"""`bench judge --answers-a A --answers-b B --judge J`: judge two answer files made anywhere,
with the same both-order protocol, completion cache and result files as `bench run`.

Formats read (one file, or a folder of them), detected per file:

- **selbench**: ``generate/<key>/<eval set>.jsonl`` rows ``{"id", "prompt", "answer"}``
  (the folder itself may be given: every ``*.jsonl`` in it);
- **FastChat** (Vicuna-80 ``answer_<model>.jsonl``): ``{"question_id", "answer_id",
  "model_id", "text"}`` where ``text`` is the answer; and the llm_judge format with
  ``"choices": [{"turns": [answer, ...]}]`` (first turn). Prompts come from the eval set
  (``--eval-set``, default vicuna for these files);
- **alpaca_eval**: a JSON list of ``{"instruction", "output", "generator"}``, matched to the
  eval sets by instruction text;
- **eval-set rows with an answer** (the DiverseEvol files): a WizardLM / Vicuna / Koala row
  plus ``"answer"``.

Prompts are matched to the registered eval sets (ids and texts), so the offline judge gets
its reference answers. Only prompts present in both files are judged; the rest are counted
in the result. Results: ``<runs>/external/judge/<judge>/<A>__vs__<B>-<h8>/``
(``judgments.jsonl``, ``result.json``, ``DONE``; the layout of a run's judge stages, so they
reach ``bench leaderboard``), completions cached in ``<runs>/external/judge/<judge>/cache.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from ..config import stable_hash
from ..data import EVAL_SETS, DataNotFound, PoolError, load_eval_set, numbered_jsonl
from ..runs import EXTERNAL, JUDGE, RunDir, experiment_root, stage_key
from .base import CompletionCache, load_judge
from .stage import build_items, judge_items, reduce, usage_of, write_rows


class AnswerFormatError(ValueError):
    pass


def _rows(path: Path) -> tuple[str, list[tuple[int, object]]]:
    """(unit, [(row number, value)]) of one answer file: a JSON list ("item" N, 1-based)
    or JSONL ("line" N, blank lines skipped). Errors name the file and the line."""
    if not path.exists():
        raise AnswerFormatError(f"{path}: answer file not found")
    if not path.is_file():  # a FIFO would block the read forever; a device never ends
        raise AnswerFormatError(f"{path}: not a regular file (a FIFO, socket or device?): "
                                f"give an answer file (JSONL or a JSON list)")
    try:
        text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        raise AnswerFormatError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise AnswerFormatError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
        except RecursionError:
            raise AnswerFormatError(f"{path}: nested too deeply") from None
        if not isinstance(data, list):
            raise AnswerFormatError(f"{path}: expected a JSON list")
        return "item", list(enumerate(data, 1))
    return "line", numbered_jsonl(text.splitlines(), path, AnswerFormatError, "line")


def detect_format(row: dict) -> str:
    if not isinstance(row, dict):
        raise AnswerFormatError(f"expected a JSON object, got {type(row).__name__}")
    if "choices" in row and "question_id" in row:
        return "fastchat-llm-judge"
    if "answer_id" in row and "question_id" in row and "text" in row:
        return "fastchat"
    if "instruction" in row and "output" in row:
        return "alpaca_eval"
    if "id" in row and "prompt" in row and "answer" in row:
        return "selbench"
    if "answer" in row:
        return "eval-row"
    raise AnswerFormatError(f"unknown answer format (keys {sorted(map(str, row))[:8]}): expected "
                            f"selbench {{id, prompt, answer}}, FastChat {{question_id, text|choices}}, "
                            f"alpaca_eval {{instruction, output}} or an eval-set row + answer")


def _eval_index(data_dir: str | None, sets: list[str]) -> tuple[dict, dict]:
    """(prompt text -> (set, id), (set, id) -> item) over the eval sets found in the data."""
    by_text, items = {}, {}
    for es in sets:
        try:
            its = load_eval_set(es, data_dir)
        except (DataNotFound, PoolError):
            continue
        for it in its:
            by_text.setdefault(it["prompt"].strip(), (es, it["id"]))
            items[(es, it["id"])] = it
    return by_text, items


def _field(r: dict, name: str, kinds: tuple, where: str, optional: bool = False):
    """``r[name]`` if it is one of ``kinds`` (a bool is no number), else an error naming it."""
    if name not in r:
        if optional:
            return None
        raise AnswerFormatError(f"{where}: field '{name}' is missing")
    v = r[name]
    if optional and v is None:
        return None
    if not isinstance(v, kinds) or isinstance(v, bool):
        want = " or ".join({str: "a string", int: "an integer", list: "a list"}[k] for k in kinds)
        raise AnswerFormatError(f"{where}: field '{name}' must be {want}, got "
                                f"{type(v).__name__} {json.dumps(v)[:40]}")
    return v


def _first_turn(r: dict, where: str) -> str:
    """The answer of a FastChat llm_judge row: ``choices[0].turns[0]``, checked."""
    choices = _field(r, "choices", (list,), where)
    if not choices or not isinstance(choices[0], dict):
        raise AnswerFormatError(f"{where}: field 'choices' must be a non-empty list of objects "
                                f"with 'turns'")
    turns = _field(choices[0], "turns", (list,), f"{where}: choices[0]")
    if not turns or not isinstance(turns[0], str):
        raise AnswerFormatError(f"{where}: field 'choices[0].turns' must be a non-empty list "
                                f"of strings (the answer is its first turn)")
    return turns[0]


def read_answers(path: str | Path, data_dir: str | None = None,
                 eval_set: str | None = None) -> tuple[dict, dict]:
    """Answers of one model: ({(eval set, id): {"prompt", "answer"}}, info).

    Every row must be an object with the fields of its file's format, of the right types;
    otherwise the error names the file, the line (or list item) and the field. A prompt
    answered twice is an error naming both rows. A row that matches no eval prompt is
    skipped and counted (``info["unmatched"]``, reported with the result)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
    elif path.exists() or path.is_symlink():
        files = [path]
    else:
        raise AnswerFormatError(f"{path}: no such answer file or folder")
    if not files:
        raise AnswerFormatError(f"{path}: no answer files (*.jsonl)")
    # the default sets (WizardLM, Vicuna) first: a prompt found in several sets (Vicuna's
    # questions are also in LIMA's test set) is matched to the default one
    sets = sorted(EVAL_SETS.names(), key=lambda n: (not EVAL_SETS.get(n).default, n))
    by_text, items = _eval_index(data_dir, sets)
    out: dict = {}
    first_at: dict = {}  # (set, id) -> "file: line N" of its answer
    info = {"files": [str(f) for f in files], "formats": Counter(), "unmatched": 0}
    for f in files:
        unit, rows = _rows(f)
        if not rows:
            continue
        try:
            fmt = detect_format(rows[0][1])
        except AnswerFormatError as e:
            raise AnswerFormatError(f"{f}: {unit} {rows[0][0]}: {e}") from None
        info["formats"][fmt] += len(rows)
        for n, r in rows:
            where = f"{f}: {unit} {n}"
            if not isinstance(r, dict):
                raise AnswerFormatError(f"{where}: expected a JSON object ({fmt} format, like "
                                        f"{unit} {rows[0][0]}), got {type(r).__name__}")
            key, prompt, answer = None, None, None
            if fmt == "selbench":
                es = eval_set or (f.stem if f.stem in sets else None)
                pid = _field(r, "id", (str, int), where)
                prompt = _field(r, "prompt", (str,), where)
                answer = _field(r, "answer", (str,), where)
                key = (es, str(pid)) if es else by_text.get(prompt.strip())
            elif fmt in ("fastchat", "fastchat-llm-judge"):
                es = eval_set or "vicuna"
                qid = _field(r, "question_id", (str, int), where)
                answer = (_field(r, "text", (str,), where) if fmt == "fastchat"
                          else _first_turn(r, where))
                key = (EVAL_SETS.canonical(es), str(qid))
                prompt = (items.get(key) or {}).get("prompt")
            elif fmt == "alpaca_eval":
                inst = _field(r, "instruction", (str,), where)
                extra = _field(r, "input", (str,), where, optional=True)
                prompt = inst + (f"\n\n{extra}" if extra else "")
                answer = _field(r, "output", (str,), where)
                key = by_text.get(prompt.strip())
            else:  # eval-set row + answer (DiverseEvol)
                answer = _field(r, "answer", (str,), where)
                for es in ([eval_set] if eval_set else sets):
                    spec = EVAL_SETS.get(es)
                    try:
                        pid = spec.get_id(r) if spec.get_id else None
                        prompt = spec.get_prompt(r)
                    except (KeyError, IndexError, TypeError, AttributeError):
                        continue
                    if not isinstance(prompt, str):
                        prompt = None
                        continue
                    k = (EVAL_SETS.canonical(es), str(pid))
                    if k in items and items[k]["prompt"].strip() == prompt.strip():
                        key = k
                        break
                if key is None and prompt:
                    key = by_text.get(prompt.strip())
            if key is None or prompt is None:
                info["unmatched"] += 1
                continue
            if key in out:
                raise AnswerFormatError(f"{where}: a second answer to {key[0]} prompt {key[1]!r} "
                                        f"(the first is at {first_at[key]}); keep one answer per "
                                        f"prompt")
            first_at[key] = where
            out[key] = {"prompt": prompt, "answer": answer}
    info["formats"] = dict(info["formats"])
    if not out:
        raise AnswerFormatError(f"{path}: no answer matched an eval prompt (give --eval-set, "
                                f"and the data dir with eval_prompts/)")
    return out, info


def safe_name(path: str | Path) -> str:
    p = Path(path)
    stem = p.name if p.is_dir() else p.stem
    return re.sub(r"[^A-Za-z0-9._+-]", "_", stem)[:80] or "answers"


def judge_files(answers_a: str | Path, answers_b: str | Path, judge_name: str,
                runs_dir: str | Path = "runs", data_dir: str | None = None,
                eval_set: str | None = None, seed: int = 0, progress: bool = True,
                log=print) -> dict:
    """Judge A against B (A = the model under test, B = the baseline) in both orders."""
    a, info_a = read_answers(answers_a, data_dir, eval_set)
    b, info_b = read_answers(answers_b, data_dir, eval_set)
    common = sorted(k for k in a if k in b)
    if not common:
        raise AnswerFormatError("the two answer files share no eval prompt")
    _, items = _eval_index(data_dir, sorted({k[0] for k in common}))
    ans_a, ans_b = {}, {}
    for es, pid in common:
        ref = (items.get((es, pid)) or {}).get("reference")
        base = {"id": pid, "prompt": a[(es, pid)]["prompt"], **({"reference": ref} if ref else {})}
        ans_a.setdefault(es, []).append({**base, "answer": a[(es, pid)]["answer"]})
        ans_b.setdefault(es, []).append({**base, "answer": b[(es, pid)]["answer"]})
    judge = load_judge(judge_name)
    rd = RunDir(experiment_root(runs_dir, EXTERNAL))
    digest = lambda d: hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]  # noqa: E731
    na, nb = safe_name(answers_a), safe_name(answers_b)
    key = stage_key(f"{JUDGE}/{judge.name}", f"{na}__vs__{nb}", judge.cache_identity(),
                    digest(ans_a), digest(ans_b))
    cache = CompletionCache(rd.judge_cache(judge.name))

    def build(tmp: Path) -> None:
        recs = build_items(ans_a, ans_b)
        counts = judge_items(judge, recs, cache, progress)
        rows, summary = reduce(recs, cache, seed=seed)
        write_rows(tmp / "judgments.jsonl", rows)
        usage = usage_of(recs, cache)
        result = {"experiment": "external", "selector": na, "baseline": nb,
                  "answers_a": str(answers_a), "answers_b": str(answers_b),
                  "formats_a": info_a["formats"], "formats_b": info_b["formats"],
                  "only_in_a": len(a) - len(common), "only_in_b": len(b) - len(common),
                  "unmatched_a": info_a["unmatched"], "unmatched_b": info_b["unmatched"],
                  "judge": judge.name, "judge_kind": judge.kind,
                  "judge_model": getattr(judge.config, "model", judge.registry_name),
                  "usage": usage, "cost_usd": judge.cost(usage), "calls": counts,
                  "judge_stats": judge.stats, "summary": summary,
                  "model_a": na, "model_b": nb, "answers_fp": stable_hash(digest(ans_a), digest(ans_b))}
        (tmp / "result.json").write_text(json.dumps(result, indent=2, default=str))

    folder = rd.cached(key, build, judge.cache_identity(), log=log)
    res = json.loads((folder / "result.json").read_text())
    res["folder"] = str(folder)
    return res


def render_result(res: dict) -> str:
    rows = []
    for es, s in res["summary"].items():
        rows.append([es, f"{s['win']}/{s['tie']}/{s['lose']}", s["unparsed"], f"{s['pws']:.3f}",
                     f"[{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]", f"{s['position_consistency']:.2f}",
                     f"{s.get('pws_compat', float('nan')):.3f}"])
    kind = " (offline, not an LLM)" if res.get("judge_kind") == "offline" else ""
    head = (f"{res['model_a']} (A) vs {res['model_b']} (B), judge {res['judge']}{kind}; "
            f"formats {res['formats_a']} / {res['formats_b']}; prompts only in A: "
            f"{res['only_in_a']}, only in B: {res['only_in_b']}")
    skipped = [f"{res.get(f'unmatched_{s}', 0)} in {s.upper()}" for s in ("a", "b")
               if res.get(f"unmatched_{s}")]
    if skipped:
        head += (f"\nskipped: {' and '.join(skipped)} answer row(s) matching no eval prompt (not "
                 f"judged; give --eval-set or --data-dir if they should match)")
    return head + "\n" + tabulate(rows, headers=["eval set", "W/T/L (A)", "unparsed", "PWS (A)",
                                                 "95% CI", "pos. consist.", "PWS-compat"],
                                  tablefmt="github", disable_numparse=True)
