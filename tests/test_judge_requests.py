"""Request shapes per API family, checked against a loopback server (a test double) that
rejects what each real API rejects (HTTP 400), never one that accepts everything."""
import pytest
import yaml
from conftest import REPO
from fake_openai_server import FaultServer, validate_request

from selbench.config import ConfigError
from selbench.judges.base import CompletionCache, load_judge
from selbench.judges.openai_api import JudgeCallError
from selbench.judges.requests import resolve_family
from selbench.judges.stage import build_items, judge_items, reduce

JUDGES = REPO / "configs" / "judges"


def shipped(tmp_path, name: str, **override) -> str:
    """A shipped judge YAML, pointed at the loopback server (base_url, test key variable)."""
    data = yaml.safe_load((JUDGES / f"{name}.yaml").read_text())
    data.update({"api_key_env": "SELBENCH_TEST_KEY", "timeout": 5, "max_retries": 0, **override})
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def answers(n=2):
    a = {"vicuna": [{"id": str(i), "prompt": f"Q{i}?", "answer": f"A{i}"} for i in range(n)]}
    b = {"vicuna": [{"id": str(i), "prompt": f"Q{i}?", "answer": f"B{i}"} for i in range(n)]}
    return a, b


def test_the_double_rejects_what_the_reasoning_api_rejects():
    msgs = [{"role": "user", "content": "hi"}]
    assert validate_request({"model": "gpt-5.1", "messages": msgs, "max_tokens": 5},
                            "reasoning")["error"]["param"] == "max_tokens"
    assert validate_request({"model": "gpt-5.1", "messages": msgs, "temperature": 0.0},
                            "reasoning")["error"]["param"] == "temperature"
    assert validate_request({"model": "gpt-5.1", "messages": msgs, "max_completion_tokens": 5,
                             "reasoning_effort": "none"}, "reasoning") is None
    assert validate_request({"model": "gpt-4o", "messages": msgs, "reasoning_effort": "low"},
                            "chat")["error"]["param"] == "reasoning_effort"
    assert validate_request({"model": "m", "messages": msgs, "foo": 1}, "chat")["error"]["param"] == "foo"
    assert validate_request({"model": "m", "messages": []}, "chat") is not None
    assert validate_request({"model": "m", "messages": [{"role": "bot", "content": "x"}]}, "chat") is not None


def test_shipped_gpt51_judge_is_accepted_by_the_reasoning_api(tmp_path, monkeypatch):
    monkeypatch.setenv("SELBENCH_TEST_KEY", "k")
    with FaultServer(family="reasoning") as srv:
        judge = load_judge(shipped(tmp_path, "gpt-5.1", base_url=srv.url, family="reasoning"))
        cache = CompletionCache(tmp_path / "cache.jsonl")
        recs = build_items(*answers())
        assert judge_items(judge, recs, cache, progress=False) == {"cached": 0, "new": 4}
        assert not srv.rejected
        body = srv.bodies[0]
        assert body["model"] == "gpt-5.1" and body["max_completion_tokens"] == 1024
        assert "max_tokens" not in body and "temperature" not in body
        assert body["reasoning_effort"] == "none"
        _, summary = reduce(recs, cache)
        assert summary["pooled"]["n"] == 2


def test_shipped_gpt51_resolves_to_reasoning_without_a_base_url():
    judge = load_judge(str(JUDGES / "gpt-5.1.yaml"))
    assert "max_completion_tokens" in judge.params and "temperature" not in judge.params


def test_a_chat_shaped_request_to_a_reasoning_model_names_the_parameter_and_yaml(tmp_path, monkeypatch):
    key = "sk-ECHOED-SECRET-999"
    monkeypatch.setenv("SELBENCH_TEST_KEY", key)
    with FaultServer(family="reasoning", echo=key) as srv:
        path = shipped(tmp_path, "gpt-5.1", base_url=srv.url, family="chat", temperature=0.0,
                       reasoning_effort=None)
        judge = load_judge(path)
        with pytest.raises(JudgeCallError) as e:
            judge_items(judge, build_items(*answers(1)), CompletionCache(tmp_path / "c.jsonl"),
                        progress=False)
        msg = str(e.value)
        assert "HTTP 400" in msg and "'max_tokens'" in msg and path in msg
        assert key not in msg and "***" in msg  # the echoed key is scrubbed
        assert srv.calls == 0 and len(srv.rejected) >= 1


def test_reasoning_family_with_a_temperature_fails_at_load_naming_the_yaml(tmp_path):
    path = shipped(tmp_path, "gpt-5.1", temperature=0.0)
    with pytest.raises(ConfigError, match="temperature") as e:
        load_judge(path)
    assert path in str(e.value)


def test_chat_family_servers_get_temperature_and_max_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("SELBENCH_TEST_KEY", "k")
    with FaultServer(family="chat") as srv:
        judge = load_judge(shipped(tmp_path, "qwen3-235b-instruct", base_url=srv.url))
        judge_items(judge, build_items(*answers(1)), CompletionCache(tmp_path / "c.jsonl"),
                    progress=False)
        body = srv.bodies[0]
        assert body["temperature"] == 0.0 and body["max_tokens"] == 512
        assert "reasoning_effort" not in body and not srv.rejected


def test_verdict_changing_parameters_are_in_the_cache_identity(tmp_path):
    a = load_judge(shipped(tmp_path, "gpt-5.1"))
    b = load_judge(shipped(tmp_path, "gpt-5.1", reasoning_effort="high"))
    c = load_judge(shipped(tmp_path, "gpt-5.1", timeout=999, concurrency=1))
    assert a.cache_identity() != b.cache_identity()
    assert a.cache_identity() == c.cache_identity()
    assert a.cache_identity()["request"]["max_completion_tokens"] == 1024


@pytest.mark.parametrize("model,base_url,family", [
    ("gpt-5.1", None, "reasoning"), ("gpt-5-mini", None, "reasoning"), ("o3-mini", None, "reasoning"),
    ("o4-mini", None, "reasoning"), ("gpt-5-chat-latest", None, "chat"), ("gpt-4o", None, "chat"),
    ("gpt-5.1", "http://127.0.0.1:8000/v1", "chat"),
])
def test_auto_family(model, base_url, family):
    assert resolve_family(model, base_url, "auto") == family


def test_retry_after_as_http_date_and_in_ms_is_honoured(tmp_path, monkeypatch):
    """The openai client's own retry reads both header forms (the hand-written float() could
    not parse a date): the retried call arrives no earlier than the server asked."""
    from selbench.judges.base import CompletionCache, load_judge
    from selbench.judges.stage import build_items, judge_items

    monkeypatch.setenv("SELBENCH_TEST_KEY", "k")
    for fault, least in (("429date", 1.0), ("429ms", 0.7)):
        with FaultServer({1: fault}, family="chat") as srv:
            cfg = {"type": "openai", "model": "test-model", "base_url": srv.url,
                   "api_key_env": "SELBENCH_TEST_KEY", "max_retries": 2, "concurrency": 1}
            (tmp_path / f"{fault}.yaml").write_text(yaml.safe_dump(cfg))
            judge = load_judge(str(tmp_path / f"{fault}.yaml"))
            a = {"vicuna": [{"id": "0", "prompt": "Q?", "answer": "A"}]}
            b = {"vicuna": [{"id": "0", "prompt": "Q?", "answer": "B"}]}
            judge_items(judge, build_items(a, b), CompletionCache(tmp_path / f"{fault}.jsonl"),
                        progress=False)
            assert srv.calls == 3 and judge.stats["retries"] == 1 and judge.stats["calls"] == 2
            assert srv.times[1] - srv.times[0] >= least, (fault, srv.times)


def test_a_judge_yaml_may_bring_its_own_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("SELBENCH_TEST_KEY", "k")
    (tmp_path / "p").mkdir()
    prompt = tmp_path / "p" / "strict.yaml"
    prompt.write_text(yaml.safe_dump({"version": "strict-v1", "system": "Be strict.",
                                      "template": "Q: {question}\nA1: {answer_1}\nA2: {answer_2}\n"
                                                  "First line: two scores."}))
    with FaultServer(family="chat") as srv:
        path = shipped(tmp_path, "qwen3-235b-instruct", base_url=srv.url, prompt_file="p/strict.yaml")
        judge = load_judge(path)
        judge_items(judge, build_items(*answers(1)), CompletionCache(tmp_path / "c.jsonl"), progress=False)
        # both orders are sent concurrently: their arrival order is not fixed
        assert len(srv.bodies) == 2
        for body in srv.bodies:
            assert body["messages"][0] == {"role": "system", "content": "Be strict."}
        users = sorted(b["messages"][1]["content"] for b in srv.bodies)
        assert users[0].startswith("Q: Q0?\nA1: A0\nA2: B0") and users[1].startswith("Q: Q0?\nA1: B0\nA2: A0")
    default = load_judge(shipped(tmp_path, "qwen3-235b-instruct"))
    assert judge.cache_identity()["prompt"].startswith("strict-v1-")
    assert default.cache_identity()["prompt"] == "vicuna-pairwise-v1"
    # the same content under another path is the same judge; other content is not
    (tmp_path / "copy.yaml").write_text(prompt.read_text())
    same = load_judge(shipped(tmp_path, "qwen3-235b-instruct", base_url=srv.url, prompt_file=str(tmp_path / "copy.yaml")))
    assert same.cache_identity() == judge.cache_identity()
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"template": "{question} only"}))
    with pytest.raises(ConfigError, match="lacks"):
        load_judge(shipped(tmp_path, "qwen3-235b-instruct", prompt_file=str(tmp_path / "bad.yaml")))


@pytest.mark.parametrize("path", sorted(JUDGES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_judge_yaml_loads(path):
    judge = load_judge(str(path))
    assert judge.name == path.stem and judge.cache_identity()["prompt"]
