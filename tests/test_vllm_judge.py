"""configs/judges/vllm-local.yaml: the openai judge against a real vLLM OpenAI-compatible
server (``python -m vllm.entrypoints.openai.api_server``) serving the embedded SmolLM2 on
127.0.0.1. One server per module; it is stopped at the end. A 135M model is a useless
judge: this exercises the machinery (requests, cache, parse or count unparsed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from selbench.judges.base import CompletionCache, load_judge
from selbench.judges.stage import build_items, judge_items, reduce, usage_of
from selbench.launch import free_port

REPO = Path(__file__).resolve().parents[1]
SERVED = "smollm2-135m-instruct"
START_TIMEOUT_S = 600  # engine start: ~30-90 s on a quiet 2-core CPU, 4 min seen under load


def test_vllm_local_judge_yaml_loads():
    judge = load_judge("vllm-local")
    c = judge.config
    assert judge.registry_name == "openai" and c.model == SERVED
    assert c.base_url.startswith("http://127.0.0.1:") and c.base_url.endswith("/v1")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (API server, engine core, worker), bounded."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def vllm_server_url(tmp_path_factory):
    url = os.environ.get("SELBENCH_VLLM_URL")  # an already running server, if given
    if url:
        yield url
        return
    from test_vllm_generate import skip_unless_vllm_imports

    skip_unless_vllm_imports()
    from selbench.models import resolve_model

    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
           resolve_model(SERVED), "--served-model-name", SERVED, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
           "--kv-cache-memory-bytes", "1G", "--disable-log-stats"]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with code {proc.returncode}:\n"
                            + log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if SERVED in r.read().decode():
                        break
            except Exception:  # noqa: BLE001
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not ready after {START_TIMEOUT_S} s:\n"
                            + log.read_text()[-3000:])
            time.sleep(1)
        yield url
    finally:
        _stop(proc)


def _judge_yaml(tmp_path, url) -> str:
    cfg = yaml.safe_load((REPO / "configs" / "judges" / "vllm-local.yaml").read_text())
    cfg.update(base_url=url, max_tokens=16, timeout=120, max_retries=2, concurrency=2)
    p = tmp_path / "vllm-local.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def _answers(n=2):
    a = {"vicuna": [{"id": str(i), "prompt": f"What is {i} + {i}?", "answer": f"It is {2 * i}."}
                    for i in range(n)]}
    b = {"vicuna": [{"id": str(i), "prompt": f"What is {i} + {i}?", "answer": "I do not know."}
                    for i in range(n)]}
    return a, b


@pytest.mark.slow
@pytest.mark.vllm
def test_openai_judge_against_real_vllm_server(tmp_path, vllm_server_url, monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)  # a local server takes any key
    judge = load_judge(_judge_yaml(tmp_path, vllm_server_url))
    assert judge.name == "vllm-local"
    cache = CompletionCache(tmp_path / "cache.jsonl")
    recs = build_items(*_answers(2))
    assert judge_items(judge, recs, cache, progress=False) == {"cached": 0, "new": 4}
    lines = [json.loads(l) for l in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and len({l["key"] for l in lines}) == 4  # every completion cached once
    rows, summary = reduce(recs, cache)
    assert all(isinstance(r["raw_ab"], str) and isinstance(r["raw_ba"], str) for r in rows)
    p = summary["pooled"]
    # each prompt is a verdict (both orders parsed) or counted unparsed, never dropped
    assert p["win"] + p["tie"] + p["lose"] + p["unparsed"] == 2
    for r in rows:
        assert (r["outcome"] == "unparsed") == (r["scores_ab"] is None or r["scores_ba"] is None)
    assert usage_of(recs, cache)["prompt_tokens"] > 0 and judge.stats["calls"] == 4
    # a second judge over the same cache pays for nothing
    judge2 = load_judge(_judge_yaml(tmp_path, vllm_server_url))
    assert judge_items(judge2, recs, CompletionCache(tmp_path / "cache.jsonl"),
                       progress=False) == {"cached": 4, "new": 0}
    assert judge2.stats["calls"] == 0
