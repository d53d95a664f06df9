"""The openai judge against a fault-injecting loopback server (a test double) and, in the
slow suite, a real llama.cpp server serving the embedded SmolLM2 GGUF."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai_server import FaultServer

from selbench.judges.base import CompletionCache, load_judge
from selbench.judges.openai_api import JudgeCallError
from selbench.judges.stage import build_items, judge_items, reduce, usage_of
from selbench.launch import free_port


def judge_yaml(tmp_path, url, **kw) -> str:
    cfg = {"type": "openai", "model": "test-model", "base_url": url, "api_key_env": "SELBENCH_TEST_KEY",
           "timeout": 1.0, "max_retries": 4, "backoff_base": 0.01, "backoff_max": 0.2,
           "concurrency": 2, "price_per_mtok_prompt": 1.0, "price_per_mtok_completion": 2.0, **kw}
    p = tmp_path / "judge.yaml"
    import yaml

    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def answers(n=3):
    a = {"vicuna": [{"id": str(i), "prompt": f"Question {i}?", "answer": f"A says {i}"} for i in range(n)]}
    b = {"vicuna": [{"id": str(i), "prompt": f"Question {i}?", "answer": f"B says {i}"} for i in range(n)]}
    return a, b


def test_faults_are_retried_and_every_item_is_judged_once(tmp_path, monkeypatch):
    key = "sk-DUMMY-SECRET-12345"
    monkeypatch.setenv("SELBENCH_TEST_KEY", key)
    script = {1: "429", 2: "500", 3: "stall", 4: "badjson", 5: "nochoice"}
    with FaultServer(script, stall_seconds=2.5) as srv:
        judge = load_judge(judge_yaml(tmp_path, srv.url))
        cache = CompletionCache(tmp_path / "cache.jsonl")
        recs = build_items(*answers(3))
        counts = judge_items(judge, recs, cache, progress=False)
        assert counts == {"cached": 0, "new": 6}
        assert judge.stats["retries"] == 5 and judge.stats["calls"] == 6
        lines = [json.loads(l) for l in (tmp_path / "cache.jsonl").read_text().splitlines()]
        assert len(lines) == 6 and len({l["key"] for l in lines}) == 6  # each item once
        rows, summary = reduce(recs, cache)
        # "7 5" in both orders: A wins when first, loses when second -> tie (position bias)
        assert summary["pooled"]["tie"] == 3 and summary["pooled"]["position_consistency"] == 0.0
        assert usage_of(recs, cache) == {"prompt_tokens": 600, "completion_tokens": 60}
        assert judge.cost(usage_of(recs, cache)) == pytest.approx((600 * 1 + 60 * 2) / 1e6)
        assert {k.lower(): v for k, v in srv.headers[0].items()}.get("authorization") == f"Bearer {key}"
        # rerun: zero calls
        before = srv.calls
        judge2 = load_judge(judge_yaml(tmp_path, srv.url))
        assert judge_items(judge2, recs, CompletionCache(tmp_path / "cache.jsonl"), progress=False) == {"cached": 6, "new": 0}
        assert srv.calls == before
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.name != "judge.yaml":
            assert key not in f.read_text(errors="ignore"), f


def test_gives_up_with_an_error_naming_the_item_and_keeps_finished_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SELBENCH_TEST_KEY", "x")
    # call 1 succeeds; then every call for one item fails 500 (max_retries=2 -> 3 tries)
    with FaultServer({2: "500", 3: "500", 4: "500"}) as srv:
        judge = load_judge(judge_yaml(tmp_path, srv.url, max_retries=2, concurrency=1))
        cache = CompletionCache(tmp_path / "cache.jsonl")
        recs = build_items(*answers(1))
        with pytest.raises(JudgeCallError, match=r"vicuna/0/ba.*gave up after 2 retries"):
            judge_items(judge, recs, cache, progress=False)
        assert len(CompletionCache(tmp_path / "cache.jsonl").entries) == 1
        # the rerun pays only for the missing item
        calls = srv.calls
        judge_items(load_judge(judge_yaml(tmp_path, srv.url)), recs,
                    CompletionCache(tmp_path / "cache.jsonl"), progress=False)
        assert srv.calls == calls + 1


def test_cache_key_ignores_secrets_and_operational_settings(tmp_path):
    j1 = load_judge(judge_yaml(tmp_path, "http://127.0.0.1:1/v1"))
    ident = j1.cache_identity()
    assert "api_key_env" in ident and "timeout" not in ident and "concurrency" not in ident
    j2 = load_judge(judge_yaml(tmp_path, "http://127.0.0.1:1/v1", timeout=99, concurrency=9))
    assert j2.cache_identity() == ident


def test_reparse_recomputes_from_cached_raw_text(tmp_path):
    from selbench.judges.reparse import reparse_folder

    folder = tmp_path / "j"
    folder.mkdir()
    rows = [{"eval_set": "vicuna", "id": "1", "raw_ab": "Assistant 1: 8\nAssistant 2: 6", "raw_ba": "6 8",
             "scores_ab": None, "scores_ba": [6.0, 8.0], "outcome": "unparsed"}]
    (folder / "judgments.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (folder / "result.json").write_text(json.dumps({"summary": {}, "seed": 0}))
    reparse_folder(folder)
    row = json.loads((folder / "judgments.jsonl").read_text())
    assert row["outcome"] == "win" and row["scores_ab"] == [8.0, 6.0]
    assert json.loads((folder / "result.json").read_text())["summary"]["pooled"]["win"] == 1


@pytest.fixture(scope="module")
def llamacpp_url():
    url = os.environ.get("SELBENCH_LLAMACPP_URL")  # .ci/run starts one and sets this
    if url:
        yield url
        return
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    from selbench.models import embedded_gguf

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model",
                             str(embedded_gguf("smollm2-135m-instruct")), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    import urllib.request

    for _ in range(300):
        if proc.poll() is not None:
            pytest.fail(f"llama.cpp server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/models", timeout=1)
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not become ready in 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.slow
def test_openai_judge_against_real_llamacpp_server(tmp_path, llamacpp_url):
    judge = load_judge(judge_yaml(tmp_path, llamacpp_url, model="smollm2", max_tokens=16,
                                  timeout=120, concurrency=1))
    cache = CompletionCache(tmp_path / "cache.jsonl")
    recs = build_items(*answers(2))
    assert judge_items(judge, recs, cache, progress=False) == {"cached": 0, "new": 4}
    rows, summary = reduce(recs, cache)
    assert all(r["raw_ab"] is not None and r["raw_ba"] is not None for r in rows)
    assert summary["pooled"]["n"] == 2  # verdicts or unparsed, each counted
    assert usage_of(recs, cache)["prompt_tokens"] > 0
    judge2 = load_judge(judge_yaml(tmp_path, llamacpp_url, model="smollm2", max_tokens=16))
    assert judge_items(judge2, recs, CompletionCache(tmp_path / "cache.jsonl"), progress=False) == {"cached": 4, "new": 0}


def test_hf_local_judge_records_completions_or_unparsed(tmp_path, tiny_model_dir):
    import yaml

    p = tmp_path / "hf.yaml"
    p.write_text(yaml.safe_dump({"type": "hf", "model": tiny_model_dir, "max_new_tokens": 4,
                                 "device": "cpu"}))
    judge = load_judge(str(p))
    cache = CompletionCache(tmp_path / "cache.jsonl")
    recs = build_items(*answers(2))
    assert judge_items(judge, recs, cache, progress=False) == {"cached": 0, "new": 4}
    rows, summary = reduce(recs, cache)
    # a random tiny model writes no scores: every prompt is counted as unparsed, not a tie
    assert summary["pooled"]["unparsed"] == 2 and summary["pooled"]["tie"] == 0
    assert all(isinstance(r["raw_ab"], str) for r in rows)


def test_retry_counts_add_up_over_batches_of_one_judge(tmp_path, monkeypatch):
    monkeypatch.setenv("SELBENCH_TEST_KEY", "x")
    with FaultServer({1: "500", 4: "500"}) as srv:
        judge = load_judge(judge_yaml(tmp_path, srv.url, max_retries=2, concurrency=1))
        judge_items(judge, build_items(*answers(1)), CompletionCache(tmp_path / "a.jsonl"), progress=False)
        assert judge.stats["retries"] == 1 and judge.stats["calls"] == 2
        a, b = answers(2)
        judge_items(judge, build_items({"vicuna": a["vicuna"][1:]}, {"vicuna": b["vicuna"][1:]}),
                    CompletionCache(tmp_path / "b.jsonl"), progress=False)
        assert srv.calls == 6 and judge.stats["retries"] == 2 and judge.stats["calls"] == 4
