"""The judge leaderboard (`bench judge --evaluate`, issue #20 sections 3-4): every reference
format read into one per-pair representation, every column checked against an independent
computation, nothing paid twice, judge noise, and the judge-noise terms of the MDE."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from selbench.judges.base import Completion, Judge
from selbench.judges.evaluate import (evaluate, evaluate_judge, flip_stats, judge_noise,
                                      leaderboard_rows, read_reference, reference_rows,
                                      render_leaderboard, sample_pairs, verdict_metrics)
from selbench.launch import free_port
from selbench.leaderboard.stats import (PRIOR, Variance, cohen_kappa, judge_noise_mde,
                                        judge_noise_variance, length_bias, mde,
                                        without_judge_noise)

CHERRY = Path("judge_transcripts") / "cherry_alpaca5pct_vs_alpaca"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- independent helpers
def _sign(x):
    return (x > 0) - (x < 0)


def _wtl(ab, ba):
    """A's W/T/L from both orders, written independently of selbench: the sum of the two
    per-order signs decides (both orders agree, or one decides and the other ties)."""
    if ab is None or ba is None:
        return "unparsed"
    s = _sign(ab[0] - ab[1]) + _sign(ba[1] - ba[0])
    return "win" if s > 0 else "lose" if s < 0 else "tie"


def _kappa_by_hand(x, y, labels=("win", "tie", "lose")):
    n = len(x)
    po = sum(a == b for a, b in zip(x, y)) / n
    pe = sum((x.count(l) / n) * (y.count(l) / n) for l in labels)
    return (po - pe) / (1 - pe)


# --------------------------------------------------------------------------- a scripted judge
@dataclass
class ScriptedConfig:
    model: str = "scripted"
    temperature: float = 0.0
    price_per_mtok_prompt: float | None = 2.0
    price_per_mtok_completion: float | None = 8.0


class LengthLovingJudge(Judge):
    """Prefers the longer answer (9 vs 6), ties equal lengths, except that every 4th question
    (by its length) it cannot be parsed; with temperature > 0 it answers at random. Counts
    every completion it is asked for (= what would be paid)."""

    config_cls = ScriptedConfig
    registry_name = "scripted"

    def __init__(self, name="length-lover", config=None, source=None):
        super().__init__(name, config or ScriptedConfig(), source)
        self.sent = 0
        self.rng = random.Random(11)

    def text_for(self, it) -> str:
        if len(it.question) % 4 == 0:
            return "I like both."
        if self.config.temperature > 0:
            return f"{self.rng.randint(1, 9)} {self.rng.randint(1, 9)}"
        l1, l2 = len(it.answer_1.split()), len(it.answer_2.split())
        return "9 6" if l1 > l2 else "6 9" if l2 > l1 else "7 7"

    def complete_many(self, items, on_done):
        for i, it in enumerate(items):
            self.sent += 1
            on_done(i, Completion(self.text_for(it), {"prompt_tokens": 100, "completion_tokens": 5}))


def _cherry_file(folder: Path, n: int, name="vicuna", seed=0) -> Path:
    """A small Cherry-format review file (the shape of the shared GPT-4 transcripts)."""
    rng = random.Random(seed)
    data = []
    for i in range(n):
        s1 = [float(rng.randint(5, 9)), float(rng.randint(5, 9))]
        s2 = [float(rng.randint(5, 9)), float(rng.randint(5, 9))]
        if i == 3:
            s2 = [-1, -1]  # the Cherry script's failed parse
        data.append({"text": f"Question {i}: " + "why " * (i % 7), "Answer1": "long answer " * (1 + i % 5),
                     "Answer2": "short " * (1 + (i * 3) % 4), "review": "..", "scores": str(s1),
                     "review_reverse": "..", "scores_reverse": str(s2)})
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}_wrap_reviews_gpt4.json"
    p.write_text(json.dumps({"Meta_Info": {"dataset_name": name}, "data": data}))
    return p


# --------------------------------------------------------------------------- readers
def test_reads_the_shared_cherry_gpt4_transcripts(data_dir):
    folder = data_dir / CHERRY
    pairs, info = read_reference(folder, str(data_dir))
    assert info["format"] == "cherry" and info["judge"] == "gpt4" and len(pairs) == 1030
    by_set = {}
    for f in sorted(folder.glob("*.json")):
        rows = json.loads(f.read_text())["data"]
        by_set[f.name.split("_")[0]] = rows
    assert {p["eval_set"] for p in pairs} == set(by_set)
    for es, rows in by_set.items():
        mine = [p for p in pairs if p["eval_set"] == es]
        assert len(mine) == len(rows)
        want = sorted(_wtl(json.loads(r["scores"]), json.loads(r["scores_reverse"])) for r in rows)
        assert sorted(p["ref_outcome"] for p in mine) == want
        assert sorted(p["answer_a"] for p in mine) == sorted(r["Answer1"] for r in rows)
    with_ref = {p["eval_set"] for p in pairs if p.get("reference")}
    assert with_ref == {"vicuna", "wizardlm", "koala"}  # the sets with reference answers
    assert sum(1 for p in pairs if p.get("reference")) == 80 + 218 + 180


def test_reference_judge_columns_on_the_shared_transcripts(data_dir):
    pairs, _ = read_reference(data_dir / CHERRY, str(data_dir))
    m = verdict_metrics(reference_rows(pairs), reference=True)
    raw = [r for f in sorted((data_dir / CHERRY).glob("*.json")) for r in json.loads(f.read_text())["data"]]
    ab = [json.loads(r["scores"]) for r in raw]
    ba = [json.loads(r["scores_reverse"]) for r in raw]
    cons = np.mean([_sign(x[0] - x[1]) == _sign(y[1] - y[0]) for x, y in zip(ab, ba)])
    first = [s[0] > s[1] for s in ab + ba if s[0] != s[1]]
    assert m["position_consistency"] == pytest.approx(cons)
    assert m["p_first"] == pytest.approx(np.mean(first))
    lens = [{"outcome": _wtl(x, y), "len_a": len(r["Answer1"].split()), "len_b": len(r["Answer2"].split())}
            for r, x, y in zip(raw, ab, ba)]
    assert m["p_longer"] == pytest.approx(length_bias(lens)["longer_won"])
    assert m["unparsed"] == 0.0 and m["n"] == 1030


def test_reads_fastchat_review_llm_judge_pair_and_alpaca_eval(tmp_path):
    # old FastChat eval: table/{question.jsonl, answer/answer_*.jsonl, review/<dir>/review_*.jsonl}
    table = tmp_path / "table"
    (table / "answer").mkdir(parents=True)
    (table / "review" / "gpt-4_review_x").mkdir(parents=True)
    (table / "question.jsonl").write_text("".join(
        json.dumps({"question_id": q, "text": f"q{q}?", "category": "c"}) + "\n" for q in (1, 2)))
    for m in ("m1", "m2"):
        (table / "answer" / f"answer_{m}.jsonl").write_text("".join(
            json.dumps({"answer_id": f"{m}-{q}", "model_id": m, "question_id": q, "text": f"{m} says {q}"}) + "\n"
            for q in (1, 2)))
    rev = table / "review" / "gpt-4_review_x" / "review_m1_m2.jsonl"
    rev.write_text(json.dumps({"question_id": 1, "answer1_id": "m1-1", "answer2_id": "m2-1", "score": [8.0, 6.0],
                               "text": "8 6\n"}) + "\n" +
                   json.dumps({"question_id": 2, "answer1_id": "m1-2", "answer2_id": "m2-2", "score": [-1, -1],
                               "text": "?"}) + "\n")
    pairs, info = read_reference(rev)
    assert info["format"] == "fastchat-review" and info["judge"] == "gpt-4"
    p = {x["id"]: x for x in pairs}
    assert p["1"]["answer_a"] == "m1 says 1" and p["1"]["question"] == "q1?"
    assert p["1"]["ref_outcome"] == "win" and p["1"]["ref_orders"] == "ab" and p["1"]["ref_ba"] is None
    assert p["2"]["ref_outcome"] == "unparsed"
    # llm_judge: data/<bench>/{question.jsonl, model_answer/<model>.jsonl, model_judgment/*_pair.jsonl}
    bench = tmp_path / "data" / "mini_bench"
    (bench / "model_answer").mkdir(parents=True)
    (bench / "model_judgment").mkdir()
    (bench / "question.jsonl").write_text("".join(
        json.dumps({"question_id": q, "turns": [f"t{q}?", "follow-up"]}) + "\n" for q in (1, 2, 3)))
    for m in ("x", "y"):
        (bench / "model_answer" / f"{m}.jsonl").write_text("".join(
            json.dumps({"question_id": q, "model_id": m, "choices": [{"index": 0, "turns": [f"{m}{q}", "t2"]}]}) + "\n"
            for q in (1, 2, 3)))
    games = [(1, "model_1", "model_1"), (2, "model_1", "model_2"), (3, "tie", "error")]
    (bench / "model_judgment" / "gpt-4_pair.jsonl").write_text("".join(
        json.dumps({"question_id": q, "model_1": "x", "model_2": "y", "g1_winner": g1, "g2_winner": g2,
                    "judge": ["gpt-4", "pair-v2"], "turn": 1}) + "\n" for q, g1, g2 in games)
        + json.dumps({"question_id": 1, "model_1": "x", "model_2": "y", "g1_winner": "model_2",
                      "g2_winner": "model_2", "judge": ["gpt-4", "pair-v2"], "turn": 2}) + "\n")
    pairs, info = read_reference(bench / "model_judgment" / "gpt-4_pair.jsonl")
    assert info["format"] == "fastchat-pair" and info["judge"] == "gpt-4" and len(pairs) == 3  # turn 1 only
    p = {x["id"]: x for x in pairs}
    assert p["1"]["ref_outcome"] == "win"  # x wins in both orders
    assert p["2"]["ref_outcome"] == "tie"  # the winner follows the position: inconsistent
    assert p["3"]["ref_outcome"] == "unparsed"  # an error game
    assert p["1"]["answer_a"] == "x1" and p["1"]["question"] == "t1?"
    m = verdict_metrics(reference_rows(pairs), reference=True)
    assert m["position_consistency"] == pytest.approx(1 / 2)  # q1 consistent, q2 not, q3 unparsed
    assert m["p_first"] == pytest.approx(3 / 4)  # q1: first, second; q2: first, first; q3 g1 tie
    # alpaca_eval annotations: output_1 = baseline, output_2 = model (A)
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps([
        {"instruction": "i1", "output_1": "base", "output_2": "model", "generator_1": "b",
         "generator_2": "m", "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": 1.9},
        {"instruction": "i2", "output_1": "base", "output_2": "model", "generator_1": "b",
         "generator_2": "m", "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": 1.0},
        {"instruction": "i3", "output_1": "base", "output_2": "model", "generator_1": "b",
         "generator_2": "m", "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": 1.5},
        {"instruction": "i4", "output_1": "base", "output_2": "model", "generator_1": "b",
         "generator_2": "m", "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": None}]))
    pairs, info = read_reference(ann)
    assert info["format"] == "alpaca_eval" and info["judge"] == "weighted_alpaca_eval_gpt4_turbo"
    assert [x["ref_outcome"] for x in pairs] == ["win", "lose", "tie", "unparsed"]
    assert pairs[0]["answer_a"] == "model" and pairs[0]["ref_orders"] == "none"
    m = verdict_metrics(reference_rows(pairs), reference=True)
    assert np.isnan(m["position_consistency"]) and np.isnan(m["p_first"])  # no order recorded


def test_reads_a_selbench_judge_folder(tmp_path):
    exp = tmp_path / "runs" / "exp"
    for key, word in (("gen-a", "alpha beta gamma"), ("gen-b", "delta")):
        d = exp / "generate" / key
        d.mkdir(parents=True)
        (d / "vicuna.jsonl").write_text("".join(
            json.dumps({"id": str(i), "prompt": f"q{i}", "answer": f"{word} {i}"}) + "\n" for i in range(3)))
    st = exp / "judge" / "some-judge" / "gen-a__vs__gen-b-0123"
    st.mkdir(parents=True)
    rows = [{"eval_set": "vicuna", "id": "0", "scores_ab": [8, 6], "scores_ba": [6, 8], "outcome": "win"},
            {"eval_set": "vicuna", "id": "1", "scores_ab": [6, 8], "scores_ba": [6, 8], "outcome": "tie"},
            {"eval_set": "vicuna", "id": "2", "scores_ab": None, "scores_ba": [6, 8], "outcome": "unparsed"}]
    (st / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (st / "result.json").write_text(json.dumps({"judge": "some-judge", "model_a": "gen-a", "model_b": "gen-b"}))
    (st / "DONE").write_text("{}")
    pairs, info = read_reference(tmp_path / "runs")
    assert info["format"] == "selbench" and info["judge"] == "some-judge"
    assert [(p["id"], p["ref_outcome"]) for p in pairs] == [("0", "win"), ("1", "tie"), ("2", "unparsed")]
    assert pairs[0]["answer_a"] == "alpha beta gamma 0" and pairs[0]["answer_b"] == "delta 0"
    assert pairs[0]["question"] == "q0"


# --------------------------------------------------------------------------- columns
def test_every_column_matches_an_independent_computation():
    rng = random.Random(3)
    rows = []
    for i in range(400):
        ab = None if rng.random() < 0.05 else [rng.randint(1, 9), rng.randint(1, 9)]
        ba = None if rng.random() < 0.05 else [rng.randint(1, 9), rng.randint(1, 9)]
        ref = rng.choice(["win", "tie", "lose", "win", "unparsed" if i % 50 == 0 else "lose"])
        rows.append({"scores_ab": ab, "scores_ba": ba, "orders": "both", "outcome": _wtl(ab, ba),
                     "ref_outcome": ref, "len_a": rng.randint(1, 30), "len_b": rng.randint(1, 30)})
    m = verdict_metrics(rows)
    parsed = [r for r in rows if r["outcome"] != "unparsed"]
    both = [r for r in parsed if r["ref_outcome"] != "unparsed"]
    x, y = [r["ref_outcome"] for r in both], [r["outcome"] for r in both]
    assert m["n"] == 400 and m["n_agree"] == len(both)
    assert m["unparsed"] == pytest.approx(sum(r["outcome"] == "unparsed" for r in rows) / 400)
    assert m["agreement"] == pytest.approx(sum(a == b for a, b in zip(x, y)) / len(both))
    assert m["kappa"] == pytest.approx(_kappa_by_hand(x, y))
    cons = [_sign(r["scores_ab"][0] - r["scores_ab"][1]) == _sign(r["scores_ba"][1] - r["scores_ba"][0])
            for r in rows if r["scores_ab"] and r["scores_ba"]]
    assert m["position_consistency"] == pytest.approx(sum(cons) / len(cons))
    assert m["p_longer"] == pytest.approx(length_bias(parsed)["longer_won"])
    first = [s[0] > s[1] for r in rows for s in (r["scores_ab"], r["scores_ba"]) if s and s[0] != s[1]]
    assert m["p_first"] == pytest.approx(sum(first) / len(first))


def test_kappa_is_sklearns_and_equals_the_hand_formula():
    rng = random.Random(5)
    x = [rng.choice(["win", "tie", "lose"]) for _ in range(300)]
    y = [v if rng.random() < 0.6 else rng.choice(["win", "tie", "lose"]) for v in x]
    assert cohen_kappa(x, y, ["win", "tie", "lose"]) == pytest.approx(_kappa_by_hand(x, y))
    assert cohen_kappa(["win"] * 5, ["win"] * 5) == 1.0 and np.isnan(cohen_kappa([], []))


def test_sample_is_seeded_and_nested():
    pairs = [{"key": f"k{i:03d}"} for i in range(100)]
    a, b = sample_pairs(pairs, 20, 1), sample_pairs(pairs, 50, 1)
    assert len(a) == 20 and {p["key"] for p in a} <= {p["key"] for p in b}
    assert sample_pairs(pairs, 20, 1) == a and sample_pairs(pairs, 20, 2) != a


# --------------------------------------------------------------------------- running judges
def test_evaluate_a_judge_end_to_end_and_nothing_is_paid_twice(tmp_path):
    ref = _cherry_file(tmp_path / "ref", 40)
    pairs, _ = read_reference(ref)
    judge = LengthLovingJudge()
    out = tmp_path / "eval"
    res = evaluate_judge(judge, pairs, out, tmp_path / "runs", progress=False, log=lambda *_: None)
    assert judge.sent == 2 * 40  # both orders of every pair
    # the scripted rule, computed here: the outcome of every pair
    want = []
    for p in pairs:
        unp = len(p["question"]) % 4 == 0
        la, lb = len(p["answer_a"].split()), len(p["answer_b"].split())
        out_ = "unparsed" if unp else "win" if la > lb else "lose" if lb > la else "tie"
        want.append({"outcome": out_, "ref": p["ref_outcome"], "la": la, "lb": lb})
    both = [w for w in want if w["outcome"] != "unparsed" and w["ref"] != "unparsed"]
    assert res["n"] == 40
    assert res["unparsed"] == pytest.approx(sum(w["outcome"] == "unparsed" for w in want) / 40)
    assert res["agreement"] == pytest.approx(np.mean([w["outcome"] == w["ref"] for w in both]))
    assert res["kappa"] == pytest.approx(_kappa_by_hand([w["ref"] for w in both], [w["outcome"] for w in both]))
    assert res["position_consistency"] == 1.0  # length, not position, decides
    assert res["p_longer"] == 1.0 and res["p_first"] == pytest.approx(0.5)
    # cost: 2 x 40 completions of 100 + 5 tokens at 2 and 8 USD per 1M tokens, per 1,000 pairs
    assert res["usd_per_1k"] == pytest.approx((80 * 100 * 2.0 + 80 * 5 * 8.0) / 1e6 / 40 * 1000)
    assert res["s_per_1k"] is not None and res["s_per_1k"] >= 0
    lines = (out / "length-lover" / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 40
    # again: everything comes from the cache, and the timing of the first run is kept
    again = LengthLovingJudge()
    res2 = evaluate_judge(again, pairs, out, tmp_path / "runs", progress=False, log=lambda *_: None)
    assert again.sent == 0 and res2["calls"] == {"cached": 80, "new": 0}
    assert res2["s_per_1k"] == pytest.approx(res["s_per_1k"])
    rows = leaderboard_rows(out)
    table = render_leaderboard(rows)
    assert "length-lover" in table and "| judge" in table


def test_judge_noise_flip_rates(tmp_path):
    pairs, _ = read_reference(_cherry_file(tmp_path / "ref", 60))
    judge = LengthLovingJudge()
    main = {}
    res = evaluate_judge(judge, pairs, tmp_path / "eval", tmp_path / "runs", noise=30,
                         noise_temperature=1.0, progress=False, log=lambda *_: None)
    nz = res["noise"]
    assert nz["n_sample"] == 30
    assert nz["same_settings"]["flip_rate"] == 0.0  # a deterministic judge never flips
    assert nz["same_settings"]["new"] == 60  # judged again, not read from the main cache
    s = nz["sampled"]
    assert s["temperature"] == 1.0 and 0 < s["flip_rate"] <= 1
    # flip_stats against a computation by hand
    a = {"p1": {"scores_ab": [8, 6], "scores_ba": [6, 8], "outcome": "win"},
         "p2": {"scores_ab": [8, 6], "scores_ba": [8, 6], "outcome": "tie"},
         "p3": {"scores_ab": None, "scores_ba": [6, 8], "outcome": "unparsed"}}
    b = {"p1": {"scores_ab": [6, 8], "scores_ba": [6, 8], "outcome": "tie"},
         "p2": {"scores_ab": [8, 6], "scores_ba": [8, 6], "outcome": "tie"},
         "p3": {"scores_ab": [8, 6], "scores_ba": [6, 8], "outcome": "win"}}
    f = flip_stats(a, b)
    assert f["n_parsed_both"] == 2 and f["flip_rate"] == 0.5
    assert f["order_flip_rate"] == pytest.approx(1 / 5)  # p1 ab flips; p1 ba, p2 x2, p3 ba same
    assert f["noise_var"] == pytest.approx(((1 - 0) ** 2 + 0) / 2 / 2)
    assert np.isnan(f["text_flip_rate"])  # no raw completions given
    ra = {"k": {"scores_ab": None, "scores_ba": None, "outcome": "unparsed", "raw_ab": "x", "raw_ba": "y"}}
    rb = {"k": {"scores_ab": None, "scores_ba": None, "outcome": "unparsed", "raw_ab": "x", "raw_ba": "z"}}
    g = flip_stats(ra, rb)
    assert np.isnan(g["flip_rate"]) and g["text_flip_rate"] == 0.5  # visible in the text only
    assert s["text_flip_rate"] > 0 and nz["same_settings"]["text_flip_rate"] == 0.0
    assert main == {}


def test_cli_evaluates_the_offline_judge_on_a_cherry_reference(tmp_path, data_dir, capsys):
    """`bench judge --evaluate` end to end with a real judge: the offline judge on a small
    Cherry-format file of real Vicuna questions (which have reference answers)."""
    from selbench.cli import main
    from selbench.data import load_eval_set

    items = load_eval_set("vicuna", str(data_dir))[:4]
    data = [{"text": it["prompt"], "Answer1": it["reference"], "Answer2": "I do not know.",
             "scores": "[8.0, 3.0]", "scores_reverse": "[3.0, 8.0]"} for it in items]
    ref = tmp_path / "vicuna_wrap_reviews_gpt4.json"
    ref.write_text(json.dumps({"Meta_Info": {"dataset_name": "vicuna"}, "data": data}))
    rc = main(["judge", "--evaluate", "--judge", "offline-refsim-minilm", "--reference", str(ref),
               "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir),
               "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "offline-refsim-minilm" in out and "gpt4 (reference)" in out
    ev = json.loads((tmp_path / "out" / "offline-refsim-minilm" / "evaluation.json").read_text())
    # the reference answer itself against "I do not know.": the offline judge agrees (win)
    assert ev["n"] == 4 and ev["agreement"] == 1.0 and ev["position_consistency"] == 1.0
    assert (tmp_path / "runs" / "external" / "judge" / "offline-refsim-minilm" / "cache.jsonl").is_file()
    assert main(["judge", "--evaluate", "--judge", "offline-refsim-minilm"]) == 2  # no --reference


def test_evaluate_skips_a_judge_whose_server_is_not_there(tmp_path):
    cfg = yaml.safe_load((REPO / "configs" / "judges" / "vllm-local.yaml").read_text())
    cfg["base_url"] = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    yml = tmp_path / "vllm-local.yaml"
    yml.write_text(yaml.safe_dump(cfg))
    ref = _cherry_file(tmp_path / "ref", 5)
    logs = []
    res = evaluate(ref, [str(yml)], tmp_path / "runs", tmp_path / "out", log=logs.append)
    assert res["skipped"][0]["judge"] == "vllm-local" and not res["results"]
    assert "needs a server" in res["skipped"][0]["why"]
    assert any("skipped vllm-local" in m for m in logs)
    assert json.loads((tmp_path / "out" / "reference.json").read_text())["n"] == 5
    assert (tmp_path / "out" / "leaderboard.md").read_text().startswith("| judge")


# --------------------------------------------------------------------------- MDE terms
def test_judge_noise_variance_and_its_mde_term():
    first = {i: ("win" if i % 3 else "tie") for i in range(90)}
    second = {i: (first[i] if i % 10 else "lose") for i in range(90)}
    second[5] = "unparsed"
    r = judge_noise_variance(first, second)
    keys = [k for k in first if second[k] != "unparsed"]
    v = {"win": 1, "tie": 0, "lose": -1}
    d = np.array([v[first[k]] - v[second[k]] for k in keys], float)
    assert r["n"] == len(keys) and r["flip_rate"] == pytest.approx(np.mean(d != 0))
    assert r["var"] == pytest.approx(np.mean(d ** 2) / 2)
    var = Variance(1.0, 0.6, 0.002)
    quiet = without_judge_noise(var, 0.1)
    assert quiet.diff == pytest.approx(0.8) and quiet.seed_share == pytest.approx((0.6 - 0.2) / 0.8)
    m = judge_noise_mde(500, 2, var, 0.1)
    assert m["mde"] == pytest.approx(mde(500, 2, var))
    assert m["mde_without_judge_noise"] == pytest.approx(mde(500, 2, quiet))
    assert m["added"] > 0 and m["judge_share"] == pytest.approx(0.2)
    assert judge_noise_mde(500, 2, PRIOR, 0.0)["added"] == 0.0


def test_flip_helpers_agree_with_stats():
    """The judges-side flip rate and sigma_J^2 equal the stats-side ones on the same data."""
    rng = random.Random(9)
    a, b = {}, {}
    for i in range(200):
        for d in (a, b):
            ab, ba = [rng.randint(5, 9), rng.randint(5, 9)], [rng.randint(5, 9), rng.randint(5, 9)]
            d[str(i)] = {"scores_ab": ab, "scores_ba": ba, "outcome": _wtl(ab, ba)}
    f = flip_stats(a, b)
    s = judge_noise_variance({k: v["outcome"] for k, v in a.items()}, {k: v["outcome"] for k, v in b.items()})
    assert f["flip_rate"] == pytest.approx(s["flip_rate"]) and f["noise_var"] == pytest.approx(s["var"])
    assert f["n_parsed_both"] == s["n"]
    assert judge_noise is not None
