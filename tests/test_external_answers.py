"""`bench judge --answers-a A --answers-b B --judge J`: answer formats, both-order judging,
cache and result files (a stub judge; the real DiverseEvol files are only read)."""
import json

import pytest

from selbench.judges.external import AnswerFormatError, detect_format, judge_files, read_answers

DE = "reference_answers/diverseevol_model_answers/"


def test_detects_every_format():
    assert detect_format({"id": "1", "prompt": "q", "answer": "a"}) == "selbench"
    assert detect_format({"question_id": 1, "answer_id": "x", "model_id": "m", "text": "a"}) == "fastchat"
    assert detect_format({"question_id": 1, "choices": [{"turns": ["a"]}]}) == "fastchat-llm-judge"
    assert detect_format({"instruction": "q", "output": "a", "generator": "g"}) == "alpaca_eval"
    assert detect_format({"idx": 1, "Instruction": "q", "answer": "a"}) == "eval-row"
    with pytest.raises(AnswerFormatError, match="unknown answer format"):
        detect_format({"foo": 1})


def test_reads_diverseevol_fastchat_and_alpaca_eval_files(data_dir, tmp_path):
    a, info = read_answers(data_dir / (DE + "wizardlm_test__kc_gpt4_initRAND100__rd_10.jsonl"), str(data_dir))
    assert len(a) == 218 and info["unmatched"] == 0 and {k[0] for k in a} == {"wizardlm"}
    v, _ = read_answers(data_dir / (DE + "vicuna_test__rand_gpt4_initRAND100__rd_10.jsonl"), str(data_dir))
    assert len(v) == 80 and ("vicuna", "1") in v
    fc, info = read_answers(data_dir / "reference_answers/fastchat_vicuna80_answers/answer_bard.jsonl",
                            str(data_dir))
    assert len(fc) == 80 and info["formats"] == {"fastchat": 80}
    assert fc[("vicuna", "1")]["prompt"] == v[("vicuna", "1")]["prompt"]
    # alpaca_eval: a JSON list matched to the eval prompts by instruction text
    ae = [{"instruction": v[("vicuna", str(i))]["prompt"], "output": f"answer {i}", "generator": "g"}
          for i in (1, 2, 3)] + [{"instruction": "not an eval prompt", "output": "x", "generator": "g"}]
    (tmp_path / "ae.json").write_text(json.dumps(ae))
    got, info = read_answers(tmp_path / "ae.json", str(data_dir))
    assert sorted(got) == [("vicuna", "1"), ("vicuna", "2"), ("vicuna", "3")] and info["unmatched"] == 1


class _StubJudge:
    """Scores the longer answer 8 and the shorter 6 (ties 7/7); counts its calls."""
    kind, name, registry_name = "llm", "stub", "stub"
    config = None
    stats = {}
    calls = 0

    def cache_identity(self):
        return {"type": "stub", "prompt": "vicuna-pairwise-v1"}

    def complete_many(self, items, on_done):
        from selbench.judges.base import Completion

        for i, it in enumerate(items):
            _StubJudge.calls += 1
            a, b = len(it.answer_1), len(it.answer_2)
            on_done(i, Completion("8 6" if a > b else "6 8" if b > a else "7 7"))

    def cost(self, usage):
        return None


def test_judges_both_orders_caches_and_writes_result_files(data_dir, tmp_path, monkeypatch):
    import selbench.judges.external as judges_pkg

    monkeypatch.setattr(judges_pkg, "load_judge", lambda name: _StubJudge())
    monkeypatch.setattr(_StubJudge, "calls", 0)  # other tests use the stub too
    sel = tmp_path / "gen"
    sel.mkdir()
    v, _ = read_answers(data_dir / (DE + "vicuna_test__rand_gpt4_initRAND100__rd_10.jsonl"), str(data_dir))
    with (sel / "vicuna.jsonl").open("w") as f:  # selbench format: generate/<key>/<set>.jsonl
        for i in range(1, 5):
            f.write(json.dumps({"id": str(i), "prompt": v[("vicuna", str(i))]["prompt"],
                                "answer": "x" * (10 if i % 2 else 50000)}) + "\n")
    b = data_dir / (DE + "vicuna_test__rand_gpt4_initRAND100__rd_10.jsonl")
    res = judge_files(sel, b, "stub", tmp_path / "runs", str(data_dir), log=lambda m: None)
    p = res["summary"]["pooled"]
    # A's short answers (i odd) lose in both orders, its long ones win: 2 W, 2 L
    assert (p["win"], p["tie"], p["lose"], p["unparsed"]) == (2, 0, 2, 0) and p["pws"] == 1.0
    assert res["only_in_b"] == 76 and res["formats_a"] == {"selbench": 4}
    assert _StubJudge.calls == 8  # both orders
    folder = tmp_path / "runs" / "external" / "judge" / "stub"  # a run's judge layout
    assert (folder / "cache.jsonl").exists()
    rows = [json.loads(l) for l in (next(folder.glob("gen__vs__*")) / "judgments.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["raw_ab"] and r["raw_ba"] for r in rows)
    # the same command again: cached, no new call
    judge_files(sel, b, "stub", tmp_path / "runs", str(data_dir), log=lambda m: None)
    assert _StubJudge.calls == 8
