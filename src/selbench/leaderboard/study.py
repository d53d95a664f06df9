"""The study table: the leaderboard CSV (``aggregate.collect``) plus what the study layer
reads from the stage folders, never recomputing anything:

- ``refnll`` / ``refnll_full``: reference-answer NLL of the subset model and of the
  full-data model (judge-free metric, per eval set; ``pooled`` = token-weighted over all
  reference sets, koala included), from ``refnll/<train key>-*/result.json``;
- ``len_a`` / ``len_b``: mean answer length in words of the subset and full-data model,
  ``longer_won`` / ``n_decided``: length bias of the judge on that comparison;
- ``train_seconds`` / ``train_steps`` / ``train_examples`` and ``full_train_seconds``;
- ``selection_device`` and ``proxy_flops`` (an estimate: 6 P N T x members x epochs (x2 for
  a separate recording pass) for a gradient profile, 4 P N T for forward-only proxies such
  as IFD; P = proxy parameters, N = pool size, T = mean tokens per example);
- ``judge_prompt_version``, ``result_dir`` (relative to the runs folder).

Rows are keyed exactly as ``collect`` keys them; the CSV written from this frame stays the
source of truth for every table and figure.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ConfigError, read_yaml
from ..estimates import forward_flops, model_params, profile_flops
from ..judges.prompts import PROMPT_VERSION
from ..runs import GENERATE, REFNLL, SELECT, TRAIN, RunDir, judge_results, train_key_of
from .aggregate import collect
from .stats import length_bias, words

STUDY_COLUMNS = ["refnll", "refnll_full", "len_a", "len_b", "longer_won", "n_decided",
                 "train_seconds", "train_steps", "train_examples", "full_train_seconds",
                 "selection_device", "proxy_flops", "judge_prompt_version", "result_dir"]


def _read_json(p: Path) -> dict:
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return d if isinstance(d, dict) else {}


def _read_jsonl(p: Path) -> list[dict]:
    try:
        return [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
    except (OSError, json.JSONDecodeError):
        return []


def refnll_of(root: Path, train_key: str) -> dict:
    hits = RunDir(root).find(REFNLL, train_key)
    return _read_json(hits[-1] / "result.json").get("summary", {}) if hits else {}


def answers_of(root: Path, gen_key: str) -> dict[str, dict[str, str]]:
    """eval set -> prompt id -> answer text."""
    out = {}
    for f in sorted(RunDir(root).stage_dir(GENERATE, gen_key).glob("*.jsonl")):
        out[f.stem] = {str(r["id"]): r.get("answer", "") for r in _read_jsonl(f)}
    return out


def judgments_of(result_json: Path) -> list[dict]:
    return _read_jsonl(result_json.parent / "judgments.jsonl")


def _profile_tokens(root: Path, proxy: str | None, n: int | None) -> float | None:
    for folder in RunDir(root).profiles():
        m = _read_json(folder / "meta.json")
        if m.get("n") == n and (proxy is None or m.get("config", {}).get("proxy") == proxy):
            return m.get("mean_tokens_per_example")
    return None


def proxy_flops(root: Path, select_dir: Path, n: int | None) -> float | None:
    """Estimated proxy FLOPs of one selection (None for selectors without a proxy)."""
    try:
        cfg = read_yaml(select_dir / "config.yaml", "stage config") or {}
    except (OSError, ConfigError):
        return None
    if not isinstance(cfg, dict):
        return None
    prof = cfg.get("profile") if isinstance(cfg.get("profile"), dict) else None
    proxy = (prof or {}).get("proxy") or cfg.get("proxy")
    if not proxy or not n:
        return None
    P = model_params(proxy)
    if not P:
        return None
    T = _profile_tokens(root, proxy, n) or min(float((prof or cfg).get("max_length") or 180), 180.0)
    if prof is not None:
        return profile_flops(P, n, T, int(prof.get("members", 1)), int(prof.get("epochs", 1)),
                             str(prof.get("record")))
    return forward_flops(P, n, T, 2.0)


@lru_cache(maxsize=64)
def _device_of(root: str) -> str:
    inv = _read_json(Path(root) / "manifest.json").get("invocations", [])
    if not inv:
        return "?"
    dev = inv[-1].get("device", {})
    cfg_dev = inv[-1].get("config", {}).get("device", "auto")
    if dev.get("cuda") and cfg_dev != "cpu":
        return f"cuda ({dev.get('gpu', 'GPU')})"
    return f"cpu ({dev.get('cpus', '?')} cores)"


def collect_study(runs_dir: Path, warn=None) -> pd.DataFrame:
    """``collect(runs_dir)`` plus the study columns (see the module docstring)."""
    runs_dir = Path(runs_dir)
    df = collect(runs_dir, warn) if warn is not None else collect(runs_dir)
    for c in STUDY_COLUMNS:
        df[c] = None
    if df.empty:
        return df
    _device_of.cache_clear()
    results = {}
    for res in judge_results(runs_dir):
        r = _read_json(res)
        if not isinstance(r, dict):  # damaged: collect() has named and skipped it
            continue
        results[(r.get("experiment"), r.get("judge"), r.get("model_a"), r.get("model_b"))] = (res, r)
    cache: dict = {}
    out_rows = []
    for row in df.to_dict("records"):
        key = (row["experiment"], row["judge"], row["model_a"], row["model_b"])
        hit = results.get(key)
        if hit is None:
            out_rows.append(row)
            continue
        res, r = hit
        root = runs_dir / str(row["experiment"])
        es = row["eval_set"]
        for which, gen in (("a", row["model_a"]), ("b", row["model_b"])):
            ck = ("ans", str(root), gen)
            if ck not in cache:
                cache[ck] = answers_of(root, gen)
        ans_a, ans_b = cache[("ans", str(root), row["model_a"])], cache[("ans", str(root), row["model_b"])]
        sets = list(ans_a) if es == "pooled" else [es]
        la = [words(t) for s in sets for t in ans_a.get(s, {}).values()]
        lb = [words(t) for s in sets for t in ans_b.get(s, {}).values()]
        row["len_a"] = float(np.mean(la)) if la else None
        row["len_b"] = float(np.mean(lb)) if lb else None
        jrows = judgments_of(res)
        lrows = [{"outcome": j["outcome"], "len_a": words(ans_a.get(j["eval_set"], {}).get(str(j["id"]), "")),
                  "len_b": words(ans_b.get(j["eval_set"], {}).get(str(j["id"]), ""))}
                 for j in jrows if es == "pooled" or j["eval_set"] == es]
        lb_ = length_bias(lrows)
        row["longer_won"], row["n_decided"] = lb_["longer_won"], lb_["n_decided"]
        for col, gen in (("refnll", row["model_a"]), ("refnll_full", row["model_b"])):
            ck = ("nll", str(root), gen)
            if ck not in cache:
                cache[ck] = refnll_of(root, train_key_of(gen))
            row[col] = (cache[ck].get(es) or {}).get("nll")
        rd = RunDir(root)
        tj = _read_json(rd.stage_dir(TRAIN, train_key_of(row["model_a"])) / "train.json")
        row["train_seconds"], row["train_steps"], row["train_examples"] = (
            tj.get("seconds"), tj.get("steps"), tj.get("examples"))
        row["full_train_seconds"] = _read_json(rd.stage_dir(TRAIN, train_key_of(row["model_b"]))
                                               / "train.json").get("seconds")
        row["selection_device"] = _device_of(str(root))
        sk = r.get("select_key")
        if sk:
            ck = ("flops", str(root), sk)
            if ck not in cache:  # the selection's own recorded estimate, else one from its config
                info = _read_json(rd.stage_dir(SELECT, sk) / "info.json")
                rec = (info.get("cost") or {}).get("flops_est") if isinstance(info, dict) else None
                cache[ck] = float(rec) if isinstance(rec, (int, float)) and rec > 0 else \
                    proxy_flops(root, rd.stage_dir(SELECT, sk), row.get("pool_size"))
            row["proxy_flops"] = cache[ck]
        row["judge_prompt_version"] = r.get("prompt_version") or PROMPT_VERSION
        row["result_dir"] = str(res.parent.relative_to(runs_dir))
        out_rows.append(row)
    return pd.DataFrame(out_rows, columns=list(df.columns))


# --------------------------------------------------------------------------- per prompt
def prompt_outcomes(runs_dir: Path, result_dir: str) -> dict[tuple[str, str], str]:
    """(eval set, prompt id) -> outcome of one judged comparison (from judgments.jsonl)."""
    rows = _read_jsonl(Path(runs_dir) / result_dir / "judgments.jsonl")
    return {(r["eval_set"], str(r["id"])): r["outcome"] for r in rows}
