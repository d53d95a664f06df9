"""The reliability suite: nothing paid twice, nothing lost, nothing written where it should
not be, nothing damaged used silently, bad input stopped before any compute.

Fast tests use in-process doubles (a scripted judge, injected ENOSPC); the ``slow`` ones run
``python -m selbench.cli run`` on the tiny model in subprocesses: kill -9 at seeded random
points of each stage, two identical runs at once, a full disk while saving the model."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from selbench.config import ConfigError, build_config
from selbench.judges.base import Completion, CompletionCache, Judge, item_key, load_judge
from selbench.judges.stage import build_items, judge_items, reduce, usage_of, write_rows
from selbench.runs import DamagedStage, DiskFull

SECRET = "sk-reliability-SECRET-0123456789"


# --------------------------------------------------------------------------- a scripted judge
@dataclass
class ScriptedConfig:
    model: str = "scripted"
    api_key_env: str = "SELBENCH_REL_KEY"


class ScriptedJudge(Judge):
    """Returns ``text_for(item)``; counts what it is asked (= what would be paid)."""

    config_cls = ScriptedConfig
    registry_name = "scripted"

    def __init__(self, text_for=lambda it: "7 5", fail_after: int | None = None,
                 error: Exception | None = None):
        super().__init__("scripted", ScriptedConfig())
        self.text_for, self.fail_after, self.error = text_for, fail_after, error
        self.sent: list[tuple[str, str, str]] = []

    def complete_many(self, items, on_done):
        for i, it in enumerate(items):
            if self.fail_after is not None and len(self.sent) >= self.fail_after:
                raise self.error or RuntimeError("judge failed")
            self.sent.append((it.question, it.answer_1, it.answer_2))
            on_done(i, Completion(self.text_for(it), {"prompt_tokens": 10, "completion_tokens": 2}))


def answers(n=4, same=()):
    a = {"vicuna": [{"id": str(i), "prompt": f"Q{i}?", "answer": f"A{i}"} for i in range(n)]}
    b = {"vicuna": [{"id": str(i), "prompt": f"Q{i}?",
                     "answer": f"A{i}" if i in same else f"B{i}"} for i in range(n)]}
    return a, b


def cache_lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_bytes().decode("ascii").splitlines()]


# --------------------------------------------------------------------------- judge cache
def test_torn_last_line_is_repaired_and_nothing_is_paid_twice(tmp_path):
    path = tmp_path / "cache.jsonl"
    recs = build_items(*answers(3))
    judge = ScriptedJudge()
    judge_items(judge, recs[:4], CompletionCache(path), progress=False)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"key": "abc", "text": "7 ')  # a crash mid-append
    cache = CompletionCache(path)
    assert cache.repaired > 0 and path.read_bytes() == whole  # torn tail dropped
    judge2 = ScriptedJudge()
    judge_items(judge2, recs, cache, progress=False)
    assert len(judge2.sent) == 2  # only the two items never judged
    lines = cache_lines(path)  # every line is whole JSON
    assert len(lines) == 6 and len({l["key"] for l in lines}) == 6
    judge3 = ScriptedJudge()
    assert judge_items(judge3, recs, CompletionCache(path), progress=False)["new"] == 0
    assert judge3.sent == []


def test_a_torn_tail_left_by_another_writer_does_not_swallow_the_next_entry(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = CompletionCache(path)  # opened before the other writer crashed
    with path.open("ab") as f:
        f.write(b'{"key": "other", "te')
    recs = build_items(*answers(1))
    judge_items(ScriptedJudge(), recs, cache, progress=False)
    again = CompletionCache(path)
    assert all(again.get(r["key"]) for r in recs) and again.bad_lines == 1


def test_a_whole_last_entry_without_newline_is_kept(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "k1", "text": "7 5", "usage": {}}))
    cache = CompletionCache(path)
    assert cache.get("k1")["text"] == "7 5" and path.read_text().endswith("\n")


def test_a_lone_surrogate_completion_is_stored_and_never_paid_again(tmp_path):
    path = tmp_path / "cache.jsonl"
    recs = build_items(*answers(2))
    judge = ScriptedJudge(lambda it: "8 3\nbad byte \udcff from the API")
    assert judge_items(judge, recs, CompletionCache(path), progress=False)["new"] == 4
    path.read_bytes().decode("ascii")  # escaped: the file is plain ASCII
    cache = CompletionCache(path)
    assert all(cache.get(r["key"])["text"].endswith("\udcff from the API") for r in recs)
    judge2 = ScriptedJudge()
    assert judge_items(judge2, recs, cache, progress=False)["new"] == 0 and not judge2.sent
    rows, summary = reduce(recs, cache)
    write_rows(tmp_path / "judgments.jsonl", rows)  # stored escaped, readable back
    back = [json.loads(l) for l in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    assert back[0]["raw_ab"].endswith("\udcff from the API") and summary["pooled"]["n"] == 2


def test_identical_requests_are_paid_once(tmp_path):
    recs = build_items(*answers(4, same={0, 2}))  # equal answers: both orders are one request
    judge = ScriptedJudge()
    cache = CompletionCache(tmp_path / "cache.jsonl")
    counts = judge_items(judge, recs, cache, progress=False)
    assert len(judge.sent) == 6 == len(set(judge.sent)) and counts == {"cached": 2, "new": 6}
    assert usage_of(recs, cache) == {"prompt_tokens": 60, "completion_tokens": 12}
    rows, summary = reduce(recs, cache)
    assert summary["pooled"]["n"] == 4 and all(r["raw_ab"] and r["raw_ba"] for r in rows)


def _fail_writes_to(monkeypatch, path: Path, after: int, forever: bool):
    """Make os.write to `path` write half a line and then fail with ENOSPC."""
    import selbench.judges.base as base

    real = os.write
    state = {"n": 0}

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target == str(path):
            state["n"] += 1
            if state["n"] > after and (forever or state["n"] <= after + 2):
                if state["n"] % 2:
                    return real(fd, bytes(data[: len(data) // 2]))  # a short write...
                raise OSError(errno.ENOSPC, "No space left on device")  # ...then a full disk
        return real(fd, data)

    monkeypatch.setattr(base.os, "write", write)


def test_full_disk_while_appending_to_the_cache(tmp_path, monkeypatch):
    recs = build_items(*answers(5))
    ref = tmp_path / "ref.jsonl"
    judge_items(ScriptedJudge(), recs, CompletionCache(ref), progress=False)

    path = tmp_path / "cache.jsonl"
    _fail_writes_to(monkeypatch, path, after=3, forever=True)
    judge = ScriptedJudge()
    with pytest.raises(OSError) as e:
        judge_items(judge, recs, CompletionCache(path), progress=False)
    assert e.value.errno == errno.ENOSPC and str(path) in str(e.value)
    assert len(judge.sent) == 4  # nothing sent after the first answer that could not be stored
    monkeypatch.undo()  # space freed
    lines = cache_lines(path)  # no torn line
    assert len(lines) == 3
    assert len(list(tmp_path.glob(".cache.jsonl.rescue-*.jsonl"))) == 1  # the 4th answer
    judge2 = ScriptedJudge()
    judge_items(judge2, recs, CompletionCache(path), progress=False)
    assert len(judge2.sent) == 10 - 4  # what was answered is never paid again
    assert not list(tmp_path.glob(".cache.jsonl.rescue-*"))  # read back, stored, removed
    assert sorted(path.read_text().splitlines()) == sorted(ref.read_text().splitlines())


def test_a_transient_write_failure_loses_no_paid_completion(tmp_path, monkeypatch):
    real = CompletionCache.put
    calls = {"n": 0}

    def flaky(self, key, comp, meta):
        calls["n"] += 1
        if calls["n"] == 3:  # one failed append (disk momentarily full), then fine
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, key, comp, meta)

    monkeypatch.setattr(CompletionCache, "put", flaky)
    path = tmp_path / "cache.jsonl"
    recs = build_items(*answers(4))
    judge = ScriptedJudge()
    judge_items(judge, recs, CompletionCache(path), progress=False)
    monkeypatch.undo()
    assert len(cache_lines(path)) == 8 and len(judge.sent) == 8  # kept and retried


def test_an_unstorable_completion_names_the_item(tmp_path):
    recs = build_items(*answers(1))
    cache = CompletionCache(tmp_path / "cache.jsonl")

    class Weird(ScriptedJudge):
        def complete_many(self, items, on_done):
            for i, it in enumerate(items):
                on_done(i, Completion("7 5", {"prompt_tokens": object()}))  # not JSON

    with pytest.raises(RuntimeError, match=r"could not be stored in .*cache.jsonl \(first: vicuna/0/ab\)"):
        judge_items(Weird(), recs, cache, progress=False)


def test_the_api_key_is_scrubbed_from_a_backend_exception(tmp_path, monkeypatch):
    monkeypatch.setenv("SELBENCH_REL_KEY", SECRET)
    recs = build_items(*answers(2))
    cache = CompletionCache(tmp_path / "cache.jsonl")
    judge = ScriptedJudge(fail_after=1, error=RuntimeError(f"server said: bad key {SECRET}"))
    with pytest.raises(RuntimeError) as e:
        judge_items(judge, recs, cache, progress=False)
    assert SECRET not in str(e.value) and "***" in str(e.value)
    assert len(CompletionCache(tmp_path / "cache.jsonl").entries) == 1  # judged before: kept


def test_the_cli_never_prints_a_secret(monkeypatch, capsys):
    import selbench.cli as cli

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def leaky(args):
        raise RuntimeError(f"401 from server: invalid key {SECRET}")

    monkeypatch.setattr(cli, "cmd_leaderboard", leaky)
    assert cli.main(["leaderboard"]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "***" in err and err.count("\n") == 1
    assert cli.main(["leaderboard", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and SECRET not in err


# --------------------------------------------------------------------------- judge names
@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "", ".", "..", ".hidden", "a" * 101])
def test_a_judge_name_must_be_one_safe_folder_name(tmp_path, name):
    p = tmp_path / "j.yaml"
    p.write_text(yaml.safe_dump({"type": "offline-refsim", "name": name}))
    with pytest.raises(ConfigError, match="judge name .* letters, digits and"):
        load_judge(str(p))


def test_a_good_judge_name_is_used(tmp_path):
    p = tmp_path / "j.yaml"
    p.write_text(yaml.safe_dump({"type": "offline-refsim", "name": "my-judge_v1.2"}))
    assert load_judge(str(p)).name == "my-judge_v1.2"


# --------------------------------------------------------------------------- whole stage outputs
def test_missing_answer_lines_are_an_error_naming_file_and_ids():
    a, b = answers(4)
    expected = {"vicuna": ["0", "1", "2", "3"]}
    b_short = {"vicuna": b["vicuna"][:2]}
    with pytest.raises(DamagedStage, match=r"gen/full/vicuna.jsonl: 2 of 4 eval prompts have no "
                                           r"answer \(ids 2, 3\).*delete its folder"):
        build_items(a, b_short, expected, ("gen/sub", "gen/full"))
    a_short = {"vicuna": a["vicuna"][1:]}
    with pytest.raises(DamagedStage, match=r"gen/sub/vicuna.jsonl: 1 of 4 .*ids 0"):
        build_items(a_short, b, expected, ("gen/sub", "gen/full"))
    with pytest.raises(DamagedStage, match="no answer"):  # without expected ids: still caught
        build_items(a, b_short)
    dup = {"vicuna": a["vicuna"] + a["vicuna"][:1]}
    with pytest.raises(DamagedStage, match="answered twice"):
        build_items(dup, b, expected, ("gen/sub", "gen/full"))
    assert len(build_items(a, b, expected, ("x", "y"))) == 8


def _result(folder: Path, pws=1.2, warnings=None):
    from selbench.runs import write_done

    s = {"win": 3, "tie": 1, "lose": 1, "unparsed": 0, "n": 5, "pws": pws, "pws_compat": pws,
         "ci95": [0.9, 1.5], "position_consistency": 1.0}
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "selector": "random", "regime": "lora", "pool": "p", "model": "m", "ratio": 0.05,
        "judge": "j", "judge_kind": "llm", "seed": 0, "experiment": folder.parts[-4],
        "summary": {"pooled": s}, "warnings": warnings or []}))
    write_done(folder)


def test_the_leaderboard_skips_a_damaged_result_with_a_warning(tmp_path, capsys):
    from selbench.cli import main
    from selbench.leaderboard import collect

    _result(tmp_path / "e1" / "judge" / "j" / "good")
    _result(tmp_path / "e2" / "judge" / "j" / "edited")
    _result(tmp_path / "e3" / "judge" / "j" / "legacy")
    (tmp_path / "e2" / "judge" / "j" / "edited" / "result.json").write_text('{"summ')
    (tmp_path / "e3" / "judge" / "j" / "legacy" / "DONE").write_text("")  # older: unverified
    (tmp_path / "e3" / "judge" / "j" / "legacy" / "result.json").write_text("{not json")
    warned = []
    df = collect(tmp_path, warn=warned.append)
    assert list(df.experiment) == ["e1"]
    assert len(warned) == 2 and "edited" in warned[0] and "result.json" in warned[0]
    assert "legacy" in warned[1]
    assert main(["leaderboard", "--runs-dir", str(tmp_path)]) == 0
    assert "skipping damaged result" in capsys.readouterr().err


def test_one_row_pool_is_warned_in_the_run_and_in_results(tmp_path, monkeypatch, data_dir):
    """ratio 0.05 of a 1-row pool selects the whole pool: the 'subset' model is the full-data
    model, judged against itself. The run says so; result.json and the CSV carry it."""
    from types import SimpleNamespace

    from selbench.benchmark import pipeline as pl
    from selbench.runs import StageKey

    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps([{"instruction": "Say hi", "output": "hi"}]))
    cfg = build_config([], {"experiment": "one", "runs_dir": str(tmp_path / "runs"),
                            "data.pool": str(pool), "data.data_dir": str(data_dir),
                            "data.eval_limit": 1, "ratios": [0.05]})
    monkeypatch.setattr(pl, "make_plan", lambda cfg, **kw: SimpleNamespace(
        problems=[], stages=[], estimates={}))
    k = StageKey("x", "full", "00000000")
    seen = {}
    monkeypatch.setattr(pl.Pipeline, "select", lambda self, s, r: (
        StageKey("select", "random", "1"), {"indices": [0], "ids": ["x"], "info": {}}))
    monkeypatch.setattr(pl.Pipeline, "train", lambda self, *a: k)
    monkeypatch.setattr(pl.Pipeline, "generate", lambda self, *a: k)
    monkeypatch.setattr(pl.Pipeline, "judge", lambda self, j, a, b, meta: seen.update(meta) or meta)
    monkeypatch.setattr(pl.Pipeline, "setting", lambda self, g: {}, raising=False)
    monkeypatch.setattr(pl.Pipeline, "refnll", lambda self, *a: {}, raising=False)
    monkeypatch.setattr(pl.Pipeline, "train_warnings", lambda self, *a: [], raising=False)
    logs = []
    pl.Pipeline(cfg, progress=False, log=logs.append).run(["bench", "run"])
    assert any(m.startswith("[warn]") and "whole pool" in m for m in logs), logs
    assert seen["warnings"] and "judged against itself" in seen["warnings"][0]


def test_warnings_reach_the_leaderboard_csv(tmp_path):
    from selbench.leaderboard import collect

    _result(tmp_path / "e" / "judge" / "j" / "a", warnings=["subset = whole pool"])
    df = collect(tmp_path)
    assert df.warnings.tolist() == ["subset = whole pool"]


# --------------------------------------------------------------------------- paths
@pytest.mark.parametrize("exp", ["../x", "/tmp/abs", "", ".", "..", "a/b", "-x", "x" * 101])
def test_experiment_must_be_one_folder_name(tmp_path, exp):
    with pytest.raises(ConfigError, match="experiment"):
        build_config([], {"experiment": exp})
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"experiment": exp}))
    with pytest.raises(ConfigError, match="experiment"):
        build_config([str(f)])


def test_the_run_folder_is_inside_the_runs_folder(tmp_path):
    from selbench.benchmark.pipeline import Pipeline

    cfg = build_config([], {"experiment": "ok-1", "runs_dir": str(tmp_path / "runs"), "device": "cpu"})
    root = Pipeline(cfg, progress=False, log=lambda m: None).root
    assert root.parent == (tmp_path / "runs").resolve() and root.name == "ok-1"


# --------------------------------------------------------------------------- bad input, CLI
def _run_cli(args, capsys):
    from selbench.cli import main

    rc = main(args)
    err = capsys.readouterr().err
    return rc, err


def _pool_cases(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    cases = {}
    sur = tmp_path / "surrogate.jsonl"
    sur.write_text('{"instruction": "ok", "output": "fine"}\n'
                   '{"instruction": "x", "output": "bad \\udcff here"}\n')
    cases["surrogate"] = (str(sur), ["surrogate.jsonl", "row 2", "field 'output'", "surrogate"])
    d = tmp_path / "adir.json"
    d.mkdir()
    cases["directory"] = (str(d), ["adir.json", "is a directory"])
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    cases["fifo"] = (str(fifo), ["fifo.jsonl", "not a regular file"])
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    cases["deep-json"] = (str(deep), ["deep.json", "nested too deeply"])
    deepl = tmp_path / "deep.jsonl"
    deepl.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n"
                     + '{"instruction": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    cases["deep-jsonl"] = (str(deepl), ["deep.jsonl", "row 2", "nested too deeply"])
    return cases


@pytest.mark.parametrize("case", ["surrogate", "directory", "fifo", "deep-json", "deep-jsonl"])
def test_bad_pool_files_are_one_line_errors(tmp_path, case):
    from selbench.data import PoolError, load_pool

    path, fragments = _pool_cases(tmp_path)[case]
    t0 = time.time()
    with pytest.raises(PoolError) as e:
        load_pool(path)
    assert time.time() - t0 < 5  # a FIFO used to hang here
    for frag in fragments:
        assert frag in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_a_row_longer_than_any_max_length_loads(tmp_path):
    from selbench.data import load_pool

    p = tmp_path / "long.json"
    p.write_text(json.dumps([{"instruction": "x " * 200_000, "output": "y " * 200_000}]))
    assert len(load_pool(str(p))) == 1


def _yaml(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(p)


def _config_cases(tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    (tmp_path / "incdir").mkdir()
    return {
        "set-bad-yaml": (["--set", "seed=[1"], ["--set 'seed=[1'", "not valid YAML"]),
        "set-empty-key": (["--set", "=3"], ["--set '=3'", "empty key"]),
        "include-int": (["--config", _yaml(tmp_path, "i5.yaml", "include: 5\n")],
                        ["i5.yaml", "include", "5"]),
        "include-dir": (["--config", _yaml(tmp_path, "idir.yaml", "include: incdir\n")],
                        ["incdir", "is a directory"]),
        "include-missing": (["--config", _yaml(tmp_path, "imiss.yaml", "include: nope.yaml\n")],
                            ["nope.yaml", "not found"]),
        "config-dir": (["--config", str(tmp_path / "incdir")], ["incdir", "is a directory"]),
        "config-bad-yaml": (["--config", _yaml(tmp_path, "bad.yaml", "a: [1\n")],
                            ["bad.yaml", "invalid YAML"]),
        "config-not-utf8": (["--config", str(_bytes(tmp_path / "l1.yaml", b"seed: \xe9\n"))],
                            ["l1.yaml", "not UTF-8"]),
        "config-list": (["--config", _yaml(tmp_path, "list.yaml", "- 1\n")],
                        ["list.yaml", "must be a mapping"]),
        "experiment-dots": (["--experiment", "../x"], ["experiment '../x'", "one folder name"]),
        "experiment-empty": (["--experiment", ""], ["experiment ''"]),
        "experiment-long": (["--experiment", "e" * 300], ["experiment", "1-100 characters"]),
        "eval-limit-0": (["--eval-limit", "0"], ["eval_limit must be >= 1"]),
        "ratio-empty": (["--ratio", ""], ["--ratio"]),
        "ratio-dup": (["--ratio", "0.1,0.1"], ["listed twice"]),
        "seed-neg": (["--seed", "-1"], ["seed must be >= 0"]),
        "threads-neg": (["--threads", "-1"], ["threads must be >= 1"]),
    }


def _bytes(p: Path, b: bytes) -> Path:
    p.write_bytes(b)
    return p


@pytest.mark.parametrize("case", ["set-bad-yaml", "set-empty-key", "include-int", "include-dir",
                                  "include-missing", "config-dir", "config-bad-yaml",
                                  "config-not-utf8", "config-list", "experiment-dots",
                                  "experiment-empty", "experiment-long", "eval-limit-0",
                                  "ratio-empty", "ratio-dup", "seed-neg", "threads-neg"])
def test_bad_config_and_flags_are_one_line_exit_2(tmp_path, capsys, case):
    args, fragments = _config_cases(tmp_path)[case]
    rc, err = _run_cli(["run", *args], capsys)
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for frag in fragments:
        assert frag in err, err


@pytest.mark.parametrize("case", ["surrogate", "directory", "fifo", "deep-json"])
def test_bad_pools_stop_bench_run_before_compute(tmp_path, capsys, case, data_dir):
    path, fragments = _pool_cases(tmp_path)[case]
    rc, err = _run_cli(["run", "--pool", path, "--data-dir", str(data_dir), "--runs-dir",
                        str(tmp_path / "runs"), "--model", str(tmp_path)], capsys)
    assert rc == 2 and "Traceback" not in err and err.startswith("error: "), err
    line = [l for l in err.splitlines() if fragments[0] in l]
    assert len(line) == 1, err  # the pool problem is one line (others may follow)
    for frag in fragments:
        assert frag in line[0], err
    assert not (tmp_path / "runs").exists()  # nothing written, nothing computed


def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    from selbench.benchmark.pipeline import Pipeline

    (tmp_path / "runs").write_text("a file")
    cfg = build_config([], {"runs_dir": str(tmp_path / "runs"), "device": "cpu"})
    from selbench.runs import write_manifest

    with pytest.raises(ConfigError, match="is a file, not a folder"):
        write_manifest(Pipeline(cfg, progress=False, log=lambda m: None).root, ["bench"], cfg, {})


@pytest.mark.parametrize("exc,fragment", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.safetensors"),
     "no space left on device: /runs/x/model.safetensors"),
    (PermissionError(errno.EACCES, "Permission denied", "/runs/x"), "Permission denied: /runs/x"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/runs/y"), "Is a directory: /runs/y"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (DiskFull(errno.ENOSPC, "no space left on device while writing /c.jsonl; free space"),
     "while writing /c.jsonl"),
    (DamagedStage("/g/vicuna.jsonl: 2 of 4 eval prompts have no answer"), "vicuna.jsonl"),
])
def test_the_cli_turns_os_and_project_errors_into_one_line(monkeypatch, capsys, exc, fragment):
    import selbench.cli as cli

    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_leaderboard", boom)
    rc, err = _run_cli(["leaderboard"], capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err, err


# --------------------------------------------------------------------------- slow: real runs
# Measured on an idle 2-core CPU a whole tiny run takes ~30 s; the kill -9 suite (baseline +
# 3 trials of kill + resume) stays under 4 minutes there. Each subprocess has a timeout.
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture(scope="module")
def shared_pool(tmp_path_factory) -> Path:
    """One pool file for every run of the module (its path is part of the select key)."""
    rng = random.Random(0)
    rows = [{"instruction": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + f" {i}",
             "input": "", "output": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20)))}
            for i in range(16)]
    pool = tmp_path_factory.mktemp("pool") / "pool.json"
    pool.write_text(json.dumps(rows))
    return pool


def _write_cfg(tmp_path: Path, model: str, data_dir: Path, runs: Path, pool: Path) -> Path:
    cfg = {"experiment": "t", "runs_dir": str(runs), "model": model, "selector": "random",
           "ratios": [0.25], "judges": ["offline-refsim-minilm"],
           "data": {"pool": str(pool), "data_dir": str(data_dir), "eval_sets": ["vicuna"],
                    "eval_limit": 2},
           "train": {"epochs": 1, "batch_size": 8, "max_length": 48, "learning_rate": 1e-3},
           "generate": {"max_new_tokens": 6, "batch_size": 4}, "device": "cpu", "threads": 1}
    path = tmp_path / f"cfg-{runs.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "selbench.cli", "run", "--config", str(cfg), "--quiet"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


VOLATILE = {"selection_seconds", "selection_cost", "calls", "judge_stats"}  # timings, call counts


def _final(root: Path) -> dict[str, object]:
    """What a finished run produced: subsets, weights, answers, judgments, results (timings,
    call counts and the judge cache's line order left out)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or "/." in "/" + rel or rel.startswith("manifest"):
            continue
        if p.name == "result.json":
            r = json.loads(p.read_text())
            out[rel] = {k: v for k, v in r.items() if k not in VOLATILE and "seconds" not in k}
        elif p.name == "cache.jsonl":
            out[rel] = sorted((e["key"], e["text"]) for e in map(json.loads, p.read_text().splitlines()))
        elif p.suffix in (".jsonl", ".npy", ".safetensors") or p.name in ("subset.json",):
            out[rel] = p.read_bytes()
    return out


def _check_clean(root: Path) -> None:
    from selbench.runs import verify_folder

    assert not list(root.rglob(".tmp-*")), list(root.rglob(".tmp-*"))
    for done in root.rglob("DONE"):
        assert verify_folder(done.parent) == [], done.parent
    for cache in root.glob("judge/*/cache.jsonl"):
        keys = [json.loads(l)["key"] for l in cache.read_bytes().decode("ascii").splitlines()]
        assert len(keys) == len(set(keys)), "a judge item was paid twice"


def _compare(root: Path, baseline: dict, what: str) -> None:
    _check_clean(root)
    final = _final(root)
    assert sorted(final) == sorted(baseline["final"]), what
    for k in final:
        assert final[k] == baseline["final"][k], f"{what}: {k} differs from an uninterrupted run"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_model_dir, data_dir, shared_pool):
    tmp = tmp_path_factory.mktemp("baseline")
    cfg = _write_cfg(tmp, tiny_model_dir, data_dir, tmp / "runs", shared_pool)
    t0 = time.time()
    out = subprocess.run(_cmd(cfg), capture_output=True, text=True, timeout=300, env=_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return {"root": tmp / "runs" / "t", "seconds": time.time() - t0,
            "final": _final(tmp / "runs" / "t")}


# where a kill lands: while the temp folder of that stage exists (or the judge cache grows)
STAGE_WINDOWS = {"train-full": ["train/.tmp-full-*"], "generate-full": ["generate/.tmp-full-*"],
                 "train-subset": ["train/.tmp-random-*"],
                 "judge": ["judge/*/.tmp-*", "judge/*/cache.jsonl"]}


def _wait_for(root: Path, globs: list[str], proc, deadline: float) -> bool:
    while time.time() < deadline and proc.poll() is None:
        if any(list(root.glob(g)) for g in globs):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_kill_dash_9_at_seeded_random_points_of_each_stage(tmp_path, tiny_model_dir, data_dir,
                                                          baseline, shared_pool):
    """Three seeded trials: each kills `bench run` with SIGKILL inside a different stage (a
    seeded choice of stage and a seeded random delay into it; the last trial at a seeded
    random time instead), then runs the same command again, which must finish with
    subsets, weights, answers, judgments and results identical to an uninterrupted run,
    no temp folder left, every stage intact and no judge item stored twice."""
    t0 = time.time()
    rng = random.Random(20261129)
    windows = rng.sample(sorted(STAGE_WINDOWS), 2) + ["random-time"]
    for trial, where in enumerate(windows):
        runs = tmp_path / f"runs{trial}"
        cfg = _write_cfg(tmp_path, tiny_model_dir, data_dir, runs, shared_pool)
        root = runs / "t"
        proc = subprocess.Popen(_cmd(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=_env())
        if where == "random-time":
            time.sleep(rng.uniform(0.3, 0.9) * baseline["seconds"])
        else:
            assert _wait_for(root, STAGE_WINDOWS[where], proc, time.time() + 240), where
            time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out = subprocess.run(_cmd(cfg), capture_output=True, text=True, timeout=300, env=_env())
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        _compare(root, baseline, f"trial {trial} (killed in {where})")
    elapsed = time.time() - t0
    load = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    assert elapsed < 240 * load, f"kill -9 suite took {elapsed:.0f}s (load factor {load:.1f})"


@pytest.mark.slow
def test_two_identical_runs_at_once_train_once_and_agree(tmp_path, tiny_model_dir, data_dir,
                                                          baseline, shared_pool):
    runs = tmp_path / "runs"
    cfg = _write_cfg(tmp_path, tiny_model_dir, data_dir, runs, shared_pool)
    procs = [subprocess.Popen(_cmd(cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=_env()) for _ in range(2)]
    outs = [p.communicate(timeout=500)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    import re

    for stage in ("select/", "train/full-", "train/random-", "generate/full-", "judge/"):
        pat = re.compile(rf"^\[run\]\s+(?:stage \d+/\d+ )?{re.escape(stage)}", re.M)
        ran = sum(len(pat.findall(o)) for o in outs)
        assert ran == 1, (stage, outs)
    _compare(runs / "t", baseline, "two concurrent runs")


@pytest.mark.slow
def test_full_disk_while_saving_the_model_then_rerun_finishes_identically(
        tmp_path, tiny_model_dir, data_dir, baseline, shared_pool, monkeypatch, capsys):
    """ENOSPC injected into the adapter save (after a partial file is written): one line
    naming the stage, no torn file left, and after space is freed the same command
    finishes with results identical to an uninterrupted run."""
    import peft.peft_model as pm
    import safetensors.torch as st

    from selbench.cli import main

    runs = tmp_path / "runs"
    cfg = _write_cfg(tmp_path, tiny_model_dir, data_dir, runs, shared_pool)

    def full(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(st, "save_file", full)
    monkeypatch.setattr(pm, "safe_save_file", full, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rc = main(["run", "--config", str(cfg), "--quiet"])
    err = capsys.readouterr().err
    errors = [l for l in err.splitlines() if l.startswith("error:")]  # (progress bars aside)
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "no space left on device" in errors[0] and "train/full-" in errors[0], err
    assert not list((runs / "t").rglob(".tmp-*")) and not list((runs / "t").glob("train/full-*"))
    monkeypatch.undo()
    out = subprocess.run(_cmd(cfg), capture_output=True, text=True, timeout=300, env=_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    _compare(runs / "t", baseline, "after a full disk")


@pytest.mark.slow
def test_a_damaged_stage_is_named_and_rebuilt_identically(tmp_path, tiny_model_dir, data_dir,
                                                          baseline, shared_pool):
    """Truncate the adapter, drop a line from an answers file, corrupt result.json and
    truncate scores.npy of a finished run: the same command names each, rebuilds those
    stages, and agrees with the uninterrupted run."""
    import shutil

    root = tmp_path / "runs" / "t"
    shutil.copytree(baseline["root"], root)
    cfg = _write_cfg(tmp_path, tiny_model_dir, data_dir, tmp_path / "runs", shared_pool)
    ad = next(root.glob("train/random-*/model/adapter_model.safetensors"))
    ad.write_bytes(ad.read_bytes()[:100])
    ans = next(root.glob("generate/full-*/vicuna.jsonl"))
    ans.write_text(ans.read_text().splitlines(True)[0])
    res = next(root.glob("judge/*/*/result.json"))
    res.write_text(res.read_text()[:50])
    sc = next(root.glob("select/*/scores.npy"))
    sc.write_bytes(sc.read_bytes()[:-8])
    out = subprocess.run(_cmd(cfg), capture_output=True, text=True, timeout=300, env=_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    damaged = [l for l in out.stdout.splitlines() if l.startswith("[damaged]")]
    for name in ("adapter_model.safetensors", "vicuna.jsonl", "scores.npy", "result.json"):
        assert any(name in l for l in damaged), damaged
    _compare(root, baseline, "after rebuilding damaged stages")
