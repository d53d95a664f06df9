"""`bench judge --evaluate`: a leaderboard of judges, each scored against reference verdicts
on the same answer pairs (issue #20, sections 3 and 4).

Reference verdicts (read by :func:`read_reference`, one per-pair representation for all):

- **selbench**: a judge stage folder ``runs/<exp>/judge/<judge>/<key>/`` (``judgments.jsonl``
  + ``result.json``), or any folder above such stages; the answers come from the run's
  ``generate/<key>/`` folders or, for ``bench judge --answers-a/-b`` results, the answer
  files named in ``result.json``;
- **Cherry / Superfiltering review JSON** (``*_wrap_reviews_gpt4.json``): ``Meta_Info`` +
  ``data`` rows with the question, ``Answer1``, ``Answer2``, ``scores`` (Answer1 shown
  first) and ``scores_reverse`` (Answer2 shown first, scores in display order); a score of
  -1 (their failed parse) is unparsed. A = Answer1, B = Answer2. The question is the row's
  field the Cherry script sent (``text``/``Instruction``/``prompt``/``instruction``/
  ``conversations``), as it sent it;
- **FastChat review JSONL**, both kinds: the old ``fastchat/eval/table/review/*.jsonl``
  (``question_id``, ``answer1_id``, ``answer2_id``, ``score: [s1, s2]``: ONE order,
  Answer1 shown first; answers from the ``answer/answer_*.jsonl`` files of the same
  ``table/`` folder or ``answers=``, questions from ``table/question.jsonl`` or the vicuna
  eval set) and the llm_judge pairwise ``model_judgment/*_pair.jsonl`` (``g1_winner``:
  model_1 shown first, ``g2_winner``: swapped; first turn only; answers from the
  benchmark's ``model_answer/<model>.jsonl``, questions from its ``question.jsonl``);
- **alpaca_eval annotations** (a JSON list with ``output_1``, ``output_2``,
  ``preference``: 2 = output_2 preferred, 1 = output_1, 1.5 or 0 = draw): A = output_2 (the
  model), B = output_1 (the baseline); the display order is not recorded, so position
  columns are empty for this reference.

Every pair: ``key``, ``comparison``, ``eval_set``, ``id``, ``question``, ``answer_a``,
``answer_b``, ``reference`` (the eval set's reference answer, for the offline judge),
``ref_ab`` / ``ref_ba`` (the reference judge's scores with A shown first / B shown first, in
display order, as in :mod:`selbench.judges.pairwise`; None when not judged or unparsed),
``ref_orders`` (``both`` | ``ab`` | ``none``) and ``ref_outcome`` (A's W/T/L, or unparsed).

A candidate judge is run on the same pairs in both orders through the normal
:func:`~selbench.judges.stage.build_items` / :func:`~selbench.judges.stage.judge_items` /
:class:`~selbench.judges.base.CompletionCache` (the cache of ``bench judge --answers-a/-b``,
``<runs>/external/judge/<judge>/cache.jsonl``): nothing is ever paid twice. The offline
judge only applies where the eval set has reference answers (vicuna, wizardlm, koala);
other pairs are skipped for it and counted (``skipped_no_reference``).

Columns (:func:`verdict_metrics`; a *pair* is one prompt with its two answers):

- ``agreement``: share of pairs with the reference's W/T/L, over pairs both parsed;
- ``kappa``: Cohen's kappa on W/T/L over the same pairs (scikit-learn);
- ``position_consistency``: share of pairs (both orders parsed) whose two orders prefer the
  same answer or both tie;
- ``p_longer``: among pairs with a decided verdict (win/lose) whose answers differ in
  length (whitespace words), the share where the longer answer won (0.5 = no preference);
- ``p_first``: among parsed orders with unequal scores, the share preferring the answer
  shown first (0.5 = no position preference);
- ``unparsed``: share of pairs with at least one order unparsed (left out of PWS);
- ``usd_per_1k`` / ``s_per_1k``: API cost (from the judge YAML's prices; None for local
  judges) and wall time of the judging calls per 1,000 pairs (2,000 completions), time
  measured on the completions this command sent (``timing.jsonl``, summed over runs);
- judge noise (:func:`judge_noise`): a seeded sample judged again with the same settings
  (a fresh cache) and, where the backend samples (``temperature`` > 0: hf and
  OpenAI-compatible judges), twice at that temperature with different seeds (hf: torch
  seeds; a server: its own RNG, the request sends no seed); the verdict flip rate is the
  share of pairs (parsed both times) whose W/T/L differs.

Output (``out``, default ``<runs>/judge-eval/<reference name>``): ``reference.json``,
``<judge>/evaluation.json``, ``<judge>/pairs.jsonl``, ``<judge>/timing.jsonl``,
``<judge>/noise/*.jsonl`` (caches of the repeats), and ``leaderboard.md`` /
``leaderboard.csv`` over every judge evaluated there.
"""
from __future__ import annotations

import ast
import copy
import csv
import dataclasses
import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tabulate import tabulate

from ..data import EVAL_SETS, DataNotFound, PoolError, load_eval_set, parse_jsonl
from ..runs import DONE, EXTERNAL, GENERATE, RunDir, experiment_root
from .base import CompletionCache, Judge, load_judge
from .external import read_answers
from .pairwise import order_verdict, pairwise_outcome
from .stage import build_items, judge_items, reduce, usage_of


class ReferenceFormatError(ValueError):
    pass


VERDICTS = ("win", "tie", "lose")
CHERRY_PROMPT_KEYS = {"vicuna": "text", "koala": "prompt", "sinstruct": "instruction",
                      "wizardlm": "Instruction", "lima": "conversations"}


def words(text: str | None) -> int:
    return len((text or "").split())


def _pair(comparison: str, eval_set: str, pid: str, question: str, a: str, b: str,
          ref_ab, ref_ba, orders: str, outcome: str | None = None) -> dict:
    if outcome is None:
        if orders == "both":
            outcome = pairwise_outcome(ref_ab, ref_ba)
        else:  # one order: its own verdict
            v = order_verdict(ref_ab, True)
            outcome = "unparsed" if v is None else {1: "win", 0: "tie", -1: "lose"}[v]
    return {"key": f"{comparison}/{eval_set}/{pid}", "comparison": comparison, "eval_set": eval_set,
            "id": str(pid), "question": question, "answer_a": a, "answer_b": b,
            "ref_ab": list(ref_ab) if ref_ab is not None else None,
            "ref_ba": list(ref_ba) if ref_ba is not None else None,
            "ref_orders": orders, "ref_outcome": outcome}


# --------------------------------------------------------------------------- readers
def _score_pair(x) -> tuple[float, float] | None:
    """A reference score pair: a list or its string ("[9.0, 8.5]"); -1 (failed parse) -> None."""
    if isinstance(x, str):
        try:
            x = ast.literal_eval(x.strip())
        except (ValueError, SyntaxError):
            return None
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        return None
    try:
        a, b = float(x[0]), float(x[1])
    except (TypeError, ValueError):
        return None
    if a < 0 or b < 0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return (a, b)


def _eval_items(es: str, data_dir: str | None) -> list[dict]:
    try:
        return load_eval_set(es, data_dir)
    except (DataNotFound, PoolError, KeyError, ValueError):
        return []


def _canonical(es: str) -> str:
    try:
        return EVAL_SETS.canonical(es)
    except Exception:  # noqa: BLE001 - not a registered set: keep the name
        return es


def read_cherry(path: Path, data_dir: str | None = None) -> tuple[list[dict], dict]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    meta, data = doc.get("Meta_Info") or {}, doc.get("data")
    if not isinstance(data, list):
        raise ReferenceFormatError(f"{path}: expected a 'data' list (Cherry review JSON)")
    name = meta.get("dataset_name") or path.name.split("_")[0]
    es = _canonical(name)
    key = CHERRY_PROMPT_KEYS.get(name) or next(
        (k for k in ("text", "Instruction", "prompt", "instruction", "conversations")
         if data and k in data[0]), None)
    if key is None:
        raise ReferenceFormatError(f"{path}: no question field in its rows")
    items = _eval_items(es, data_dir)
    aligned = len(items) == len(data)  # the review file keeps the eval set's order
    by_text: dict[str, dict] = {}
    for it in items:
        by_text.setdefault(str(it["prompt"]).strip(), it)
    pairs, used = [], set()
    for i, r in enumerate(data):
        raw = r[key]
        q = raw if isinstance(raw, str) else str(raw)  # as their script formatted it
        head = raw if isinstance(raw, str) else str(raw[0]) if isinstance(raw, list) and raw else q
        # the eval set's row at the same position (Cherry sends sinstruct's instruction
        # without its input, hence a prefix), else the same question text
        if aligned and str(items[i]["prompt"]).strip().startswith(head.strip()):
            it = items[i]
        else:
            it = by_text.get(head.strip())
        pid = it["id"] if it else str(i)
        if pid in used:  # a question asked twice in the set (WizardLM has such): keep both
            pid, it = f"{pid}#{i}", None
        used.add(pid)
        p = _pair(path.parent.name, es, pid, q, r["Answer1"], r["Answer2"],
                  _score_pair(r.get("scores")), _score_pair(r.get("scores_reverse")), "both")
        if it is not None and it.get("reference"):
            p["reference"] = it["reference"]
        pairs.append(p)
    m = re.search(r"_reviews_([A-Za-z0-9.\-]+)\.json$", path.name)
    return pairs, {"format": "cherry", "judge": m.group(1) if m else "cherry-review"}


def _fastchat_table(path: Path) -> Path | None:
    for d in path.parents:
        if (d / "answer").is_dir() or (d / "question.jsonl").is_file() and (d / "review").is_dir():
            return d
    return None


def _answers_by_id(files: Iterable[Path]) -> dict[str, str]:
    out = {}
    for f in files:
        for r in parse_jsonl(f.read_text(encoding="utf-8").splitlines(), f, ReferenceFormatError):
            if "answer_id" in r and isinstance(r.get("text"), str):
                out[str(r["answer_id"])] = r["text"]
    return out


def _vicuna_questions(data_dir: str | None) -> dict[str, dict]:
    return {it["id"]: it for it in _eval_items("vicuna", data_dir)}


def read_fastchat_review(path: Path, rows: list[dict], data_dir: str | None = None,
                         answers: str | None = None) -> tuple[list[dict], dict]:
    table = _fastchat_table(path)
    folder = Path(answers) if answers else (table / "answer" if table else None)
    if folder is None or not folder.exists():
        raise ReferenceFormatError(f"{path}: FastChat review needs its answer files: give "
                                   f"--answers (a folder of answer_*.jsonl)")
    by_id = _answers_by_id(sorted(folder.glob("*.jsonl")) if folder.is_dir() else [folder])
    qs: dict[str, dict] = {}
    if table is not None and (table / "question.jsonl").is_file():
        for r in parse_jsonl((table / "question.jsonl").read_text().splitlines(), table, ReferenceFormatError):
            qs[str(r["question_id"])] = {"prompt": r["text"]}
    vic = _vicuna_questions(data_dir)
    pairs, missing = [], 0
    comp = path.stem.removeprefix("review_")
    for r in rows:
        qid = str(r["question_id"])
        a, b = by_id.get(str(r["answer1_id"])), by_id.get(str(r["answer2_id"]))
        q = (qs.get(qid) or vic.get(qid) or {}).get("prompt")
        if a is None or b is None or q is None:
            missing += 1
            continue
        p = _pair(comp, "vicuna", qid, q, a, b, _score_pair(r.get("score")), None, "ab")
        if vic.get(qid, {}).get("reference") and vic[qid]["prompt"].strip() == q.strip():
            p["reference"] = vic[qid]["reference"]
        pairs.append(p)
    judge = path.parent.name.split("_review_")[0] if "_review_" in path.parent.name else "gpt-4"
    return pairs, {"format": "fastchat-review", "judge": judge, "missing_answers": missing}


def read_fastchat_pair(path: Path, rows: list[dict], data_dir: str | None = None,
                       answers: str | None = None) -> tuple[list[dict], dict]:
    bench = path.parent.parent
    folder = Path(answers) if answers else bench / "model_answer"
    if not folder.is_dir():
        raise ReferenceFormatError(f"{path}: llm_judge pair judgments need the model answers: "
                                   f"give --answers (the benchmark's model_answer/ folder)")
    ans: dict[str, dict[str, str]] = {}
    for f in sorted(folder.glob("*.jsonl")):
        for r in parse_jsonl(f.read_text(encoding="utf-8").splitlines(), f, ReferenceFormatError):
            model = r.get("model_id") or f.stem
            try:
                ans.setdefault(model, {})[str(r["question_id"])] = r["choices"][0]["turns"][0]
            except (KeyError, IndexError, TypeError):
                continue
    qs = {}
    if (bench / "question.jsonl").is_file():
        for r in parse_jsonl((bench / "question.jsonl").read_text().splitlines(), bench, ReferenceFormatError):
            qs[str(r["question_id"])] = r["turns"][0]
    vic = _vicuna_questions(data_dir)
    win = {"model_1": (1.0, 0.0), "model_2": (0.0, 1.0), "tie": (0.0, 0.0)}
    pairs, missing = [], 0
    for r in rows:
        if int(r.get("turn", 1)) != 1:
            continue
        m1, m2, qid = r["model_1"], r["model_2"], str(r["question_id"])
        a, b = ans.get(m1, {}).get(qid), ans.get(m2, {}).get(qid)
        q = qs.get(qid) or (vic.get(qid) or {}).get("prompt")
        if a is None or b is None or q is None:
            missing += 1
            continue
        g1 = win.get(r.get("g1_winner"))  # model_1 (A) shown first
        g2 = win.get(r.get("g2_winner"))  # model_2 (B) shown first: its "model_1" is A, second
        ba = None if g2 is None else (g2[1], g2[0])
        pairs.append(_pair(f"{m1}__vs__{m2}", bench.name, qid, q, a, b, g1, ba, "both"))
    judge = r.get("judge", ["fastchat"])[0] if rows and isinstance(rows[0].get("judge"), list) else "fastchat"
    return pairs, {"format": "fastchat-pair", "judge": judge, "missing_answers": missing}


def read_alpaca_eval(path: Path, rows: list[dict], data_dir: str | None = None) -> tuple[list[dict], dict]:
    by_text: dict[str, tuple[str, str, dict]] = {}
    for es in sorted(EVAL_SETS.names(), key=lambda n: (not EVAL_SETS.get(n).default, n)):
        for it in _eval_items(es, data_dir):
            by_text.setdefault(it["prompt"].strip(), (es, it["id"], it))
    pairs, seen = [], {}
    for i, r in enumerate(rows):
        pref = r.get("preference")
        try:
            pref = float(pref)
        except (TypeError, ValueError):
            pref = float("nan")
        outcome = ("unparsed" if not math.isfinite(pref) else "win" if pref > 1.5 + 1e-9
                   else "lose" if 0 < pref < 1.5 - 1e-9 else "tie")
        q = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        hit = by_text.get(q.strip())
        es, pid, it = hit if hit else (r.get("dataset") or "alpaca_eval", str(i), None)
        comp = f"{r.get('generator_2', 'output_2')}__vs__{r.get('generator_1', 'output_1')}"
        n = seen.setdefault((comp, es, pid), 0)
        seen[(comp, es, pid)] += 1
        p = _pair(comp, es, pid if n == 0 else f"{pid}#{n}", q, r["output_2"], r["output_1"],
                  None, None, "none", outcome)
        if it is not None and it.get("reference"):
            p["reference"] = it["reference"]
        pairs.append(p)
    judge = rows[0].get("annotator", "alpaca_eval") if rows else "alpaca_eval"
    return pairs, {"format": "alpaca_eval", "judge": str(judge)}


def _stage_answers(folder: Path, result: dict, data_dir: str | None) -> tuple[dict, dict]:
    """(eval set, id) -> {"prompt", "answer"} of models A and B of one judge stage."""
    if result.get("answers_a") and result.get("answers_b"):  # bench judge --answers-a/-b
        a, _ = read_answers(result["answers_a"], data_dir)
        b, _ = read_answers(result["answers_b"], data_dir)
        return a, b
    root = folder.parents[2]  # runs/<exp>/judge/<judge>/<key>

    def gen(key: str) -> dict:
        out = {}
        for f in sorted(RunDir(root).stage_dir(GENERATE, key).glob("*.jsonl")):
            for r in parse_jsonl(f.read_text(encoding="utf-8").splitlines(), f, ReferenceFormatError):
                out[(f.stem, str(r["id"]))] = {"prompt": r.get("prompt", ""), "answer": r.get("answer", "")}
        return out

    return gen(result["model_a"]), gen(result["model_b"])


def read_selbench(path: Path, data_dir: str | None = None) -> tuple[list[dict], dict]:
    stages = sorted(p.parent for p in path.rglob("judgments.jsonl")
                    if (p.parent / "result.json").is_file() and (p.parent / DONE).exists())
    if not stages:
        raise ReferenceFormatError(f"{path}: no finished judge stage (judgments.jsonl + "
                                   f"result.json + DONE) under it")
    pairs, judges, missing = [], set(), 0
    refs: dict[str, dict] = {}
    for st in stages:
        res = json.loads((st / "result.json").read_text())
        judges.add(res.get("judge", st.parent.name))
        a, b = _stage_answers(st, res, data_dir)
        comp = f"{res.get('model_a', st.name)}__vs__{res.get('model_b', '')}"
        for j in parse_jsonl((st / "judgments.jsonl").read_text(encoding="utf-8").splitlines(),
                             st, ReferenceFormatError):
            k = (j["eval_set"], str(j["id"]))
            if k not in a or k not in b:
                missing += 1
                continue
            p = _pair(comp, j["eval_set"], str(j["id"]), a[k]["prompt"], a[k]["answer"],
                      b[k]["answer"], j.get("scores_ab"), j.get("scores_ba"), "both")
            es = j["eval_set"]
            if es not in refs:
                refs[es] = {it["id"]: it for it in _eval_items(es, data_dir)}
            ref = refs[es].get(str(j["id"]), {}).get("reference")
            if ref:
                p["reference"] = ref
            pairs.append(p)
    return pairs, {"format": "selbench", "judge": ",".join(sorted(judges)), "missing_answers": missing}


def read_reference(path: str | Path, data_dir: str | None = None,
                   answers: str | None = None) -> tuple[list[dict], dict]:
    """Reference verdicts from a file or folder in any supported format (module docstring).
    A folder of Cherry review JSON files is read file by file. Returns (pairs, info)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ReferenceFormatError(f"reference not found: {path}")
    if path.is_dir():
        if any(path.rglob("judgments.jsonl")):
            pairs, info = read_selbench(path, data_dir)
        else:
            files = sorted(path.glob("*.json")) + sorted(path.glob("*.jsonl"))
            if not files:
                raise ReferenceFormatError(f"{path}: no verdict files in it")
            pairs, infos = [], []
            for f in files:
                p, i = read_reference(f, data_dir, answers)
                pairs += p
                infos.append(i)
            info = {"format": ",".join(sorted({i["format"] for i in infos})),
                    "judge": ",".join(sorted({i["judge"] for i in infos})),
                    "files": [str(f) for f in files]}
    else:
        text = path.read_text(encoding="utf-8").lstrip("\ufeff")
        if text.lstrip().startswith("{") and '"Meta_Info"' in text[:2000] or path.suffix == ".json" \
                and text.lstrip().startswith("{"):
            pairs, info = read_cherry(path, data_dir)
        elif text.lstrip().startswith("["):
            rows = json.loads(text)
            if not rows or not isinstance(rows[0], dict) or "preference" not in rows[0]:
                raise ReferenceFormatError(f"{path}: a JSON list, but not alpaca_eval annotations "
                                           f"(no 'preference')")
            pairs, info = read_alpaca_eval(path, rows, data_dir)
        else:
            rows = parse_jsonl(text.splitlines(), path, ReferenceFormatError, unit="line")
            if rows and "g1_winner" in rows[0]:
                pairs, info = read_fastchat_pair(path, rows, data_dir, answers)
            elif rows and "score" in rows[0] and "answer1_id" in rows[0]:
                pairs, info = read_fastchat_review(path, rows, data_dir, answers)
            else:
                raise ReferenceFormatError(f"{path}: unknown verdict format (keys "
                                           f"{sorted(rows[0])[:8] if rows else []})")
    seen = set()
    for p in pairs:
        if p["key"] in seen:
            raise ReferenceFormatError(f"{path}: pair {p['key']} appears twice")
        seen.add(p["key"])
    info = {**info, "path": str(path), "n": len(pairs)}
    return pairs, info


# --------------------------------------------------------------------------- metrics
def _outcome_v(o: str) -> int:
    return {"win": 1, "tie": 0, "lose": -1}[o]


def verdict_metrics(rows: Sequence[dict], reference: bool = False) -> dict:
    """The columns for one judge. ``rows`` per pair: ``scores_ab``, ``scores_ba`` (None when
    unparsed or not judged), ``orders`` ('both' | 'ab' | 'none'), ``outcome`` (the judge's),
    ``ref_outcome`` (the reference's; ignored with ``reference=True``), ``len_a``, ``len_b``."""
    n = len(rows)
    parsed = [r for r in rows if r["outcome"] in VERDICTS]
    out: dict = {"n": n, "n_parsed": len(parsed),
                 "unparsed": (n - len(parsed)) / n if n else float("nan")}
    if not reference:
        both = [r for r in parsed if r["ref_outcome"] in VERDICTS]
        out["n_agree"] = len(both)
        if both:
            x, y = [r["ref_outcome"] for r in both], [r["outcome"] for r in both]
            out["agreement"] = float(np.mean([a == b for a, b in zip(x, y)]))
            out["kappa"] = cohen_kappa(x, y)
        else:
            out["agreement"] = out["kappa"] = float("nan")
    cons = [order_verdict(r["scores_ab"], True) == order_verdict(r["scores_ba"], False)
            for r in rows if r.get("orders", "both") == "both"
            and r["scores_ab"] is not None and r["scores_ba"] is not None]
    out["n_consistency"] = len(cons)
    out["position_consistency"] = float(np.mean(cons)) if cons else float("nan")
    dec = [r for r in parsed if r["outcome"] != "tie" and r["len_a"] != r["len_b"]]
    out["n_longer"] = len(dec)
    out["p_longer"] = (float(np.mean([(r["len_a"] > r["len_b"]) == (r["outcome"] == "win") for r in dec]))
                       if dec else float("nan"))
    first = []
    for r in rows:
        if r.get("orders", "both") == "none":
            continue
        for s in (r["scores_ab"], r["scores_ba"]):
            if s is not None and s[0] != s[1]:
                first.append(s[0] > s[1])
    out["n_first"] = len(first)
    out["p_first"] = float(np.mean(first)) if first else float("nan")
    return out


def cohen_kappa(x: Sequence[str], y: Sequence[str]) -> float:
    """Cohen's kappa on W/T/L (scikit-learn's ``cohen_kappa_score``); 1.0 when both raters
    give every pair the same single verdict (scikit-learn's 0/0)."""
    if not len(x):
        return float("nan")
    if len(set(x) | set(y)) == 1:
        return 1.0
    from sklearn.metrics import cohen_kappa_score  # lazy: heavy

    return float(cohen_kappa_score(list(x), list(y), labels=list(VERDICTS)))


def reference_rows(pairs: Sequence[dict]) -> list[dict]:
    return [{"scores_ab": p["ref_ab"], "scores_ba": p["ref_ba"], "orders": p["ref_orders"],
             "outcome": p["ref_outcome"], "len_a": words(p["answer_a"]), "len_b": words(p["answer_b"])}
            for p in pairs]


def flip_stats(first: dict[str, dict], second: dict[str, dict]) -> dict:
    """Two judgings of the same pairs (key -> row with scores_ab, scores_ba, outcome): the
    verdict flip rate over pairs parsed both times, the flip rate of single orders (the
    per-order verdict, over orders parsed both times), sigma_J^2 = mean((v1 - v2)^2) / 2,
    and the share of completions whose raw text differs (``raw_ab``/``raw_ba``, when given:
    noise is visible there even for a judge that never gets parsed)."""
    keys = [k for k in first if k in second]
    both = [k for k in keys if first[k]["outcome"] in VERDICTS and second[k]["outcome"] in VERDICTS]
    v1 = np.array([_outcome_v(first[k]["outcome"]) for k in both], float)
    v2 = np.array([_outcome_v(second[k]["outcome"]) for k in both], float)
    orders, texts = [], []
    for k in keys:
        for s, a_first in (("scores_ab", True), ("scores_ba", False)):
            o1, o2 = order_verdict(first[k][s], a_first), order_verdict(second[k][s], a_first)
            if o1 is not None and o2 is not None:
                orders.append(o1 != o2)
            raw = "raw_" + s[-2:]
            if first[k].get(raw) is not None and second[k].get(raw) is not None:
                texts.append(first[k][raw] != second[k][raw])
    return {"n": len(keys), "n_parsed_both": len(both),
            "flip_rate": float(np.mean(v1 != v2)) if both else float("nan"),
            "order_flip_rate": float(np.mean(orders)) if orders else float("nan"),
            "noise_var": float(np.mean((v1 - v2) ** 2) / 2) if both else float("nan"),
            "text_flip_rate": float(np.mean(texts)) if texts else float("nan")}


# --------------------------------------------------------------------------- running
def sample_pairs(pairs: Sequence[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """A seeded sample of ``limit`` pairs (all when None); nested: a smaller limit with the
    same seed gives a subset of a larger one's pairs."""
    ordered = sorted(pairs, key=lambda p: p["key"])
    if not limit or limit >= len(ordered):
        return ordered
    perm = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in sorted(perm[:limit])]


def run_judge(judge: Judge, pairs: Sequence[dict], cache: CompletionCache,
              progress: bool = True) -> tuple[dict[str, dict], dict]:
    """Judge every pair in both orders (cache first). Returns (key -> row with raw_ab,
    raw_ba, scores_ab, scores_ba, outcome; run info: counts, seconds, usage, cost)."""
    ans_a: dict[str, list[dict]] = {}
    ans_b: dict[str, list[dict]] = {}
    for p in pairs:
        base = {"id": p["key"], "prompt": p["question"],
                **({"reference": p["reference"]} if p.get("reference") else {})}
        ans_a.setdefault(p["eval_set"], []).append({**base, "answer": p["answer_a"]})
        ans_b.setdefault(p["eval_set"], []).append({**base, "answer": p["answer_b"]})
    recs = build_items(ans_a, ans_b)
    t0 = time.perf_counter()
    counts = judge_items(judge, recs, cache, progress)
    seconds = time.perf_counter() - t0
    rows, _ = reduce(recs, cache)
    usage = usage_of(recs, cache)
    return ({r["id"]: r for r in rows},
            {"counts": counts, "seconds": seconds, "usage": usage, "cost_usd": judge.cost(usage),
             "n_pairs": len(pairs)})


def with_temperature(judge: Judge, temperature: float) -> Judge | None:
    """A copy of ``judge`` that samples at ``temperature`` (None if its backend has no
    temperature: the offline judge; or only its default: reasoning models)."""
    if judge.kind == "offline" or not hasattr(judge.config, "temperature"):
        return None
    cfg = dataclasses.replace(copy.deepcopy(judge.config), temperature=float(temperature))
    try:
        return type(judge)(f"{judge.name}@t{temperature:g}", cfg, judge.source)
    except Exception:  # noqa: BLE001 - e.g. a reasoning model refuses a temperature
        return None


def _seed_backend(judge: Judge, seed: int) -> None:
    if judge.registry_name == "hf":
        import torch  # lazy: heavy

        torch.manual_seed(seed)


def judge_noise(judge: Judge, pairs: Sequence[dict], main: dict[str, dict], folder: Path,
                n: int = 100, seed: int = 0, temperature: float | None = 0.7,
                progress: bool = True) -> dict:
    """Judge a seeded sample of ``n`` pairs again (issue #20, section 4): once more with the
    same settings (a fresh cache, ``noise/repeat.jsonl``, against ``main``: the rows of the
    evaluation itself), and, where the backend samples, twice at ``temperature`` with
    seeds ``seed + 1`` and ``seed + 2``. Returns the flip statistics of each."""
    sample = sample_pairs(pairs, n, seed + 7919)
    out: dict = {"n_sample": len(sample)}
    folder.mkdir(parents=True, exist_ok=True)
    rep, info = run_judge(judge, sample, CompletionCache(folder / "repeat.jsonl"), progress)
    out["same_settings"] = {**flip_stats({p["key"]: main[p["key"]] for p in sample if p["key"] in main}, rep),
                            "seconds": info["seconds"], "new": info["counts"]["new"]}
    hot = with_temperature(judge, temperature) if temperature else None
    if hot is not None:
        runs = []
        for r in (1, 2):
            _seed_backend(hot, seed + r)
            rows, info = run_judge(hot, sample, CompletionCache(folder / f"t{temperature:g}-seed{seed + r}.jsonl"),
                                   progress)
            runs.append(rows)
        out["sampled"] = {**flip_stats(runs[0], runs[1]), "temperature": temperature,
                          "seeds": [seed + 1, seed + 2]}
    return out


def _timing(folder: Path) -> tuple[float, int]:
    secs, items = 0.0, 0
    p = folder / "timing.jsonl"
    if p.is_file():
        for line in p.read_text().splitlines():
            if line.strip():
                t = json.loads(line)
                secs += t["seconds"]
                items += t["new_items"]
    return secs, items


def evaluate_judge(judge: Judge | str, pairs: Sequence[dict], out: Path, runs_dir: str | Path = "runs",
                   limit: int | None = None, seed: int = 0, noise: int = 0,
                   noise_temperature: float | None = 0.7, progress: bool = True,
                   log=print) -> dict:
    """Run ``judge`` on (a seeded sample of) the reference pairs and score it. Writes
    ``<out>/<judge>/evaluation.json`` and ``pairs.jsonl``; returns the evaluation."""
    judge = load_judge(judge) if isinstance(judge, str) else judge
    chosen = sample_pairs(pairs, limit, seed)
    skipped = 0
    if judge.kind == "offline":
        skipped = sum(1 for p in chosen if not p.get("reference"))
        chosen = [p for p in chosen if p.get("reference")]
        if skipped:
            log(f"[judge-eval] {judge.name}: {skipped} pair(s) have no reference answer "
                f"(their eval set ships none): the offline judge is evaluated on the other {len(chosen)}")
    if not chosen:
        raise ReferenceFormatError(f"judge '{judge.name}': no pair to judge")
    folder = Path(out) / judge.name
    folder.mkdir(parents=True, exist_ok=True)
    cache = CompletionCache(RunDir(experiment_root(runs_dir, EXTERNAL)).judge_cache(judge.name))
    rows, info = run_judge(judge, chosen, cache, progress)
    if info["counts"]["new"]:
        with (folder / "timing.jsonl").open("a") as f:
            f.write(json.dumps({"new_items": info["counts"]["new"], "seconds": info["seconds"],
                                "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    secs, items = _timing(folder)
    per_pair = []
    for p in chosen:
        r = rows[p["key"]]
        per_pair.append({"key": p["key"], "eval_set": p["eval_set"], "id": p["id"],
                         "scores_ab": r["scores_ab"], "scores_ba": r["scores_ba"], "orders": "both",
                         "outcome": r["outcome"], "ref_outcome": p["ref_outcome"],
                         "len_a": words(p["answer_a"]), "len_b": words(p["answer_b"]),
                         "raw_ab": r.get("raw_ab"), "raw_ba": r.get("raw_ba")})
    m = verdict_metrics(per_pair)
    n = len(chosen)
    tokens = info["usage"]["prompt_tokens"] + info["usage"]["completion_tokens"]
    res = {"judge": judge.name, "kind": judge.kind, "model": judge.judge_model,
           "limit": limit, "seed": seed, "skipped_no_reference": skipped, **m,
           "usd_per_1k": None if info["cost_usd"] is None else info["cost_usd"] / n * 1000,
           "tokens_per_1k": tokens / n * 1000 if tokens else None,
           "s_per_1k": secs / items * 2000 if items else None,
           "timed_items": items, "calls": info["counts"], "cache": str(cache.path)}
    if noise:
        res["noise"] = judge_noise(judge, chosen, rows, folder / "noise", noise, seed,
                                   noise_temperature, progress)
    with (folder / "pairs.jsonl").open("w", encoding="utf-8") as f:
        for r in per_pair:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (folder / "evaluation.json").write_text(json.dumps(res, indent=2, default=str))
    return res


def reference_name(info: dict) -> str:
    stem = Path(info["path"]).name
    digest = hashlib.sha256(info["path"].encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{stem}-{digest}")[:90]


def evaluate(reference: str | Path, judges: Sequence[str], runs_dir: str | Path = "runs",
             out: str | Path | None = None, data_dir: str | None = None, answers: str | None = None,
             limit: int | None = None, seed: int = 0, noise: int = 0,
             noise_temperature: float | None = 0.7, progress: bool = True, log=print) -> dict:
    """``bench judge --evaluate``: read the reference, describe it, evaluate each judge that
    can run here (a judge whose server, key or model is missing is skipped with the reason)
    and rebuild the leaderboard of ``out``. Returns {"out", "reference", "results", "skipped"}."""
    pairs, info = read_reference(reference, data_dir, answers)
    out = Path(out) if out else Path(runs_dir) / "judge-eval" / reference_name(info)
    out.mkdir(parents=True, exist_ok=True)
    ref = {**info, **verdict_metrics(reference_rows(pairs), reference=True),
           "n_sets": sorted({p["eval_set"] for p in pairs}),
           "with_reference_answer": sum(1 for p in pairs if p.get("reference"))}
    (out / "reference.json").write_text(json.dumps(ref, indent=2, default=str))
    results, skipped = [], []
    for name in judges:
        judge = load_judge(name)
        problems = [m for kind, m in judge.needs() if kind != "note"]
        if problems:
            log(f"[judge-eval] skipped {judge.name}: {'; '.join(problems)}")
            skipped.append({"judge": judge.name, "why": "; ".join(problems)})
            continue
        log(f"[judge-eval] {judge.name} on {limit or len(pairs)} of {len(pairs)} pairs")
        results.append(evaluate_judge(judge, pairs, out, runs_dir, limit, seed, noise,
                                      noise_temperature, progress, log))
    write_leaderboard(out)
    return {"out": str(out), "reference": ref, "results": results, "skipped": skipped}


# --------------------------------------------------------------------------- table
COLUMNS = [("judge", "judge"), ("n", "n"), ("agreement", "agree"), ("kappa", "κ"),
           ("position_consistency", "pos. consist."), ("p_longer", "P(longer)"),
           ("p_first", "P(first)"), ("unparsed", "unparsed"), ("usd_per_1k", "$ / 1k pairs"),
           ("s_per_1k", "s / 1k pairs"), ("flip", "flip (same / sampled)")]


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer)):
        return str(v)
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"


def _flip(d: dict | None) -> str:
    """The verdict flip rate; for a judge never parsed twice, the raw-text flip rate."""
    d = d or {}
    v, t = d.get("flip_rate"), d.get("text_flip_rate")
    if isinstance(v, float) and math.isfinite(v):
        return _fmt(v, True)
    if isinstance(t, float) and math.isfinite(t):
        return f"{_fmt(t, True)} (text)"
    return "—"


def leaderboard_rows(out: Path) -> list[dict]:
    """The reference row, then every evaluated judge of ``out`` (best kappa first)."""
    out = Path(out)
    rows = []
    if (out / "reference.json").is_file():
        ref = json.loads((out / "reference.json").read_text())
        rows.append({**ref, "judge": f"{ref['judge']} (reference)", "agreement": None, "kappa": None,
                     "usd_per_1k": None, "s_per_1k": None})
    evals = [json.loads(p.read_text()) for p in sorted(out.glob("*/evaluation.json"))]

    def by_kappa(e: dict) -> float:
        k = e.get("kappa")
        return -k if isinstance(k, (int, float)) and math.isfinite(k) else math.inf

    evals.sort(key=by_kappa)
    for e in evals:
        nz = e.get("noise") or {}
        e["flip"] = None if not nz else (f"{_flip(nz.get('same_settings'))} / "
                                         f"{_flip(nz.get('sampled'))}")
        rows.append(e)
    return rows


def render_leaderboard(rows: Sequence[dict]) -> str:
    pct = {"agreement", "position_consistency", "p_longer", "p_first", "unparsed"}
    body = []
    for r in rows:
        line = []
        for key, _ in COLUMNS:
            v = r.get(key)
            if key == "usd_per_1k" and v is None and r.get("kind") in ("llm", "offline") \
                    and "(reference)" not in str(r.get("judge")):
                line.append("local")
            elif key in ("judge", "flip"):
                line.append("—" if v is None else str(v))
            elif key == "kappa":
                line.append(_fmt(v))
            elif key == "usd_per_1k":
                line.append("—" if v is None else f"{v:.2f}")
            elif key == "s_per_1k":
                line.append("—" if v is None else f"{v:,.0f}")
            else:
                line.append(_fmt(v, key in pct))
        body.append(line)
    return tabulate(body, headers=[h for _, h in COLUMNS], tablefmt="github", disable_numparse=True)


def write_leaderboard(out: Path) -> tuple[Path, Path]:
    rows = leaderboard_rows(out)
    md = Path(out) / "leaderboard.md"
    md.write_text(render_leaderboard(rows) + "\n")
    cols = ["judge", "kind", "model", "n", "n_parsed", "n_agree", "agreement", "kappa",
            "position_consistency", "p_longer", "p_first", "unparsed", "usd_per_1k",
            "tokens_per_1k", "s_per_1k", "skipped_no_reference", "flip"]
    path = Path(out) / "leaderboard.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in cols})
    return path, md
