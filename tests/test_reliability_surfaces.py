"""Issue 22, "nothing lost on the new surfaces": a full disk while judging (a real 1 MiB
tmpfs where the machine lets us mount one, else a write double as strict as ENOSPC; paid
requests counted on a loopback OpenAI server double), external answer files, `bench
export subset` after a later run, same-size corruption of large files, YAML alias bombs,
train config errors, the pool's skip counts in run/plan/recorded files, a mistyped runs
folder."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from fake_openai_server import FaultServer

from selbench.judges.base import CompletionCache, load_judge
from selbench.judges.stage import build_items, judge_items
from selbench.runs import DiskFull


# --------------------------------------------------------------------------- a small disk
class SmallDisk:
    """A folder on a 1 MiB tmpfs: ``fill()`` takes every free byte (a filler file), ``free()``
    gives it back. Where mounting is not allowed, the same folder on the normal disk with a
    double: while 'full', every ``os.write`` to a file under it writes half and then raises
    ENOSPC (stricter than tmpfs, which still lets a write finish a page it has)."""

    def __init__(self, path: Path, real: bool, monkeypatch):
        self.path, self.real, self._mp = path, real, monkeypatch
        self.full = False
        self.filler = path / ".filler"
        if not real:
            real_write = os.write
            import selbench.judges.base as base

            def write(fd, data):
                if self.full:
                    try:
                        target = os.readlink(f"/proc/self/fd/{fd}")
                    except OSError:
                        target = ""
                    if target.startswith(str(self.path) + os.sep):
                        if len(data) > 1:
                            real_write(fd, bytes(data[: len(data) // 2]))
                        raise OSError(errno.ENOSPC, "No space left on device")
                return real_write(fd, data)

            monkeypatch.setattr(base.os, "write", write)

    def fill(self) -> None:
        self.full = True
        if not self.real:
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)

    def free(self) -> None:
        self.full = False
        if self.filler.exists():
            self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    d = tmp_path / "fs"
    d.mkdir()
    mounted = False
    if not os.environ.get("SELBENCH_TEST_NO_MOUNT"):  # set it to test the double here
        try:
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)],
                                     capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError):
            mounted = False
    disk = SmallDisk(d, mounted, monkeypatch)
    try:
        yield disk
    finally:
        disk.free()
        if mounted:
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=20)


def _judge_yaml(tmp_path: Path, url: str, **kw) -> str:
    cfg = {"type": "openai", "model": "test-model", "base_url": url,
           "api_key_env": "SELBENCH_TEST_KEY", "timeout": 5.0, "max_retries": 2,
           "backoff_base": 0.01, "backoff_max": 0.1, "concurrency": 3, **kw}
    p = tmp_path / "judge.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def _answers(n: int):
    a = {"vicuna": [{"id": str(i), "prompt": f"Question {i}?", "answer": f"A says {i}"} for i in range(n)]}
    b = {"vicuna": [{"id": str(i), "prompt": f"Question {i}?", "answer": f"B says {i}"} for i in range(n)]}
    return a, b


def _keys(path: Path) -> list[str]:
    return [json.loads(l)["key"] for l in path.read_bytes().decode("ascii").splitlines()]


# --------------------------------------------------------------------------- disk full judging
def test_disk_full_while_judging_stops_sending_and_nothing_answered_is_paid_twice(
        tmp_path, small_disk, monkeypatch):
    """40 prompts x 2 orders = 80 paid requests at most. The disk fills up while the 3rd
    request is answered: judging stops sending (only the requests already in flight are
    answered), every answer that could not be stored goes to a rescue file on another disk,
    the error names the cache and the rescue file; after space is freed the same judging
    pays only for what was never answered: exactly 80 requests over both runs."""
    monkeypatch.setenv("SELBENCH_TEST_KEY", "sk-test")
    rescue_dir = tmp_path / "rescue"
    monkeypatch.setenv("SELBENCH_RESCUE_DIR", str(rescue_dir))
    concurrency, n_items = 3, 80
    cache_path = small_disk.path / "judge" / "cache.jsonl"
    recs = build_items(*_answers(n_items // 2))
    lock = threading.Lock()

    def on_call(n):
        if n == 3:
            with lock:
                small_disk.fill()

    with FaultServer(on_call=on_call, delay=0.1) as srv:
        judge = load_judge(_judge_yaml(tmp_path, srv.url, concurrency=concurrency))
        with pytest.raises(DiskFull) as e:
            judge_items(judge, recs, CompletionCache(cache_path), progress=False)
        paid_first = srv.calls
        msg = str(e.value)
        stored = _keys(cache_path) if cache_path.exists() else []
        rescues = sorted(rescue_dir.glob("*.jsonl")) + sorted(cache_path.parent.glob(".cache.jsonl.rescue-*.jsonl"))
        assert str(cache_path) in msg and "free space and rerun the same command" in msg, msg
        assert len(rescues) == 1 and str(rescues[0]) in msg, (rescues, msg)
        if small_disk.real:  # the cache's own disk is full: the rescue went to the other one
            assert rescues[0].parent == rescue_dir
        unstored = paid_first - len(stored)
        # no new request after the first failed write: only those in flight were answered
        assert paid_first < n_items and 1 <= unstored <= concurrency, (paid_first, len(stored))
        rescued = [json.loads(l) for l in rescues[0].read_text().splitlines()[1:]]
        assert len(rescued) == unstored and not {r["key"] for r in rescued} & set(stored)

        small_disk.free()  # space freed: the same judging again
        judge2 = load_judge(_judge_yaml(tmp_path, srv.url, concurrency=concurrency))
        counts = judge_items(judge2, recs, CompletionCache(cache_path), progress=False)
        assert srv.calls == n_items, f"{srv.calls - n_items} answered request(s) paid twice"
        assert counts == {"cached": paid_first, "new": n_items - paid_first}
    keys = _keys(cache_path)
    assert len(keys) == len(set(keys)) == n_items  # every item once, none lost
    assert not list(rescue_dir.glob("*.jsonl")) and not list(cache_path.parent.glob(".*rescue*"))


def test_a_rescue_file_the_disk_cannot_store_yet_is_used_and_kept(tmp_path, monkeypatch):
    """Reading a rescue file back while the cache's disk is still full: its answers are used
    (not asked again) and the file is kept until they are in the cache."""
    from selbench.judges.base import Completion

    monkeypatch.setenv("SELBENCH_RESCUE_DIR", str(tmp_path / "rescue"))
    path = tmp_path / "c" / "cache.jsonl"
    cache = CompletionCache(path)
    saved = cache.save_rescue([{"key": "k1", "text": "7 5", "usage": {}, "label": "x"}])
    assert saved is not None and saved.parent == path.parent

    def full(self, line):
        raise DiskFull(errno.ENOSPC, "full")

    with monkeypatch.context() as m:
        m.setattr(CompletionCache, "_append", full)
        again = CompletionCache(path)
        assert again.get("k1")["text"] == "7 5" and saved.exists()
    last = CompletionCache(path)
    assert last.get("k1")["text"] == "7 5" and not saved.exists() and _keys(path) == ["k1"]
    cache.put("k2", Completion("1 2"), {"label": "y"})
    assert _keys(path) == ["k1", "k2"]


# --------------------------------------------------------------------------- external answers
def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from selbench.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _judge_cli(a: Path, b: Path, tmp_path: Path, data_dir: Path) -> list[str]:
    return ["judge", "--answers-a", str(a), "--answers-b", str(b), "--judge",
            "offline-refsim-minilm", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir)]


def _good_b(tmp_path: Path) -> Path:
    return _jsonl(tmp_path / "b.jsonl", [{"question_id": i, "answer_id": "x", "model_id": "b",
                                          "text": f"B answer {i}"} for i in (1, 2, 3)])


BAD_ROWS = {  # (rows of A, fragments the one-line error must hold)
    "answered twice": ([{"question_id": 1, "answer_id": "a", "model_id": "m", "text": "first"},
                        {"question_id": 2, "answer_id": "b", "model_id": "m", "text": "x"},
                        {"question_id": 1, "answer_id": "c", "model_id": "m", "text": "second"}],
                       ["line 3", "second answer to vicuna prompt '1'", "line 1"]),
    "turns is a string": ([{"question_id": 1, "choices": [{"turns": "not a list"}]}],
                          ["line 1", "turns", "must be a list"]),
    "row is a list": ([{"question_id": 1, "answer_id": "a", "model_id": "m", "text": "x"}, [1, 2]],
                      ["line 2", "expected a JSON object", "list"]),
    "first row is a number": (["3"], ["line 1", "expected a JSON object, got int"]),
    "text missing": ([{"question_id": 1, "answer_id": "a", "model_id": "m", "text": "x"},
                      {"question_id": 2, "answer_id": "b", "model_id": "m"}],
                     ["line 2", "field 'text' is missing"]),
    "choices empty": ([{"question_id": 1, "choices": []}], ["line 1", "field 'choices'", "non-empty"]),
    "turns empty": ([{"question_id": 1, "choices": [{"turns": []}]}], ["line 1", "choices[0].turns"]),
    "choices not objects": ([{"question_id": 1, "choices": ["x"]}], ["line 1", "field 'choices'"]),
    "question_id a list": ([{"question_id": [1], "answer_id": "a", "model_id": "m", "text": "x"}],
                           ["line 1", "field 'question_id' must be a string or an integer"]),
    "text not a string": ([{"question_id": 1, "answer_id": "a", "model_id": "m", "text": {"t": 1}}],
                          ["line 1", "field 'text' must be a string"]),
    "selbench prompt null": ([{"id": "1", "prompt": None, "answer": "x"}],
                             ["line 1", "field 'prompt' must be a string"]),
    "alpaca_eval instruction a number": ([{"instruction": 5, "output": "x", "generator": "g"}],
                                         ["line 1", "field 'instruction' must be a string"]),
    "invalid JSON": (['{"question_id": 1, "text": '], ["line 1", "invalid JSON"]),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_malformed_answer_file_is_one_line_naming_file_row_and_field(tmp_path, capsys, data_dir,
                                                                       case):
    rows, fragments = BAD_ROWS[case]
    a = _jsonl(tmp_path / "a.jsonl", rows)
    rc, out, err = _cli(_judge_cli(a, _good_b(tmp_path), tmp_path, data_dir), capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, (rc, out, err)
    assert "Traceback" not in err and str(a) in err, err
    for frag in fragments:
        assert frag in err, (frag, err)
    assert not (tmp_path / "runs" / "external").exists()  # nothing judged


def test_a_json_list_answer_file_names_the_item(tmp_path, capsys, data_dir):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"instruction": "q", "output": "x", "generator": "g"},
                             {"instruction": "q2", "output": None, "generator": "g"}]))
    rc, _, err = _cli(_judge_cli(a, _good_b(tmp_path), tmp_path, data_dir), capsys)
    assert rc == 2 and f"{a}: item 2: field 'output' must be a string" in err, err


def test_a_fifo_as_answer_file_is_refused_not_waited_on(tmp_path, data_dir):
    fifo = tmp_path / "answers.jsonl"
    os.mkfifo(fifo)
    cmd = [os.sys.executable, "-m", "selbench.cli", *_judge_cli(fifo, _good_b(tmp_path), tmp_path, data_dir)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("bench judge waited on a FIFO for 60 s")
    assert out.returncode == 2 and "not a regular file" in out.stderr and str(fifo) in out.stderr, out.stderr


def test_rows_matching_no_eval_prompt_are_counted_and_reported(tmp_path, data_dir, monkeypatch):
    import selbench.judges.external as ext
    from selbench.judges.base import Completion

    class Stub:
        kind, name, registry_name, config, stats = "llm", "stub", "stub", None, {}

        def cache_identity(self):
            return {"type": "stub"}

        def complete_many(self, items, on_done):
            for i, _ in enumerate(items):
                on_done(i, Completion("7 5"))

        def cost(self, usage):
            return None

    monkeypatch.setattr(ext, "load_judge", lambda name: Stub())
    a = _jsonl(tmp_path / "a.jsonl", [{"question_id": i, "answer_id": "a", "model_id": "m",
                                       "text": f"A {i}"} for i in (1, 2, 3, 999)])
    res = ext.judge_files(a, _good_b(tmp_path), "stub", tmp_path / "runs", str(data_dir),
                          log=lambda m: None)
    assert res["unmatched_a"] == 1 and res["unmatched_b"] == 0
    assert res["summary"]["pooled"]["win"] + res["summary"]["pooled"]["tie"] + \
        res["summary"]["pooled"]["lose"] + res["summary"]["pooled"]["unparsed"] == 3
    assert "skipped: 1 in A answer row(s) matching no eval prompt" in ext.render_result(res)


# --------------------------------------------------------------------------- export subset
def _pool_file(path: Path, n: int, tag: str) -> Path:
    rows = [{"instruction": f"{tag} instruction {i}", "input": "", "output": f"{tag} output {i}"}
            for i in range(n)] + [{"instruction": f"{tag} instruction 0", "input": "",
                                   "output": f"{tag} output 0"},  # a duplicate: skipped
                                  {"instruction": f"{tag} empty", "input": "", "output": " "}]
    path.write_text(json.dumps(rows))
    return path


def _select_once(tmp_path: Path, data_dir: Path, pool: Path, **data) -> tuple[Path, dict, object]:
    """The select stage of a real pipeline (random selector, ratio 0.5), manifest written as
    `bench run` writes it when it starts."""
    from selbench.benchmark.pipeline import Pipeline
    from selbench.config import build_config
    from selbench.runs import write_manifest

    cfg = build_config(overrides={"experiment": "x", "runs_dir": str(tmp_path / "runs"),
                                  "selector": "random", "ratios": [0.5], "judges": [],
                                  "data.pool": str(pool), "data.data_dir": str(data_dir),
                                  "data.eval_sets": ["vicuna"], "data.eval_limit": 2,
                                  **{f"data.{k}": v for k, v in data.items()}})
    pipe = Pipeline(cfg, progress=False, log=lambda m: None)
    pipe.load_data()
    write_manifest(pipe.root, ["bench", "run"], cfg, {}, resolved={"pool": pipe.data.pool_record(cfg)})
    key, sub = pipe.select(pipe.build_selector(), 0.5)
    return pipe.rd.path(key), sub, pipe.data.pool


def _later_run_on_another_pool(tmp_path: Path, data_dir: Path) -> None:
    """A later `bench run` in the same experiment, on another pool and sample seed."""
    _select_once(tmp_path, data_dir, _pool_file(tmp_path / "other.json", 30, "other"),
                 pool_size=12, sample_seed=7)


def test_export_subset_reads_the_pool_its_select_stage_recorded(tmp_path, data_dir, capsys):
    folder, sub, pool = _select_once(tmp_path, data_dir, _pool_file(tmp_path / "mine.json", 20, "mine"),
                                     pool_size=10, sample_seed=3)
    info = json.loads((folder / "info.json").read_text())
    assert info["pool"]["skipped"] == {"empty_output": 1, "duplicate": 1}
    _later_run_on_another_pool(tmp_path, data_dir)
    out = tmp_path / "subset.jsonl"
    rc, stdout, err = _cli(["export", "subset", str(folder), "--out", str(out)], capsys)
    assert rc == 0, err
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in pool.rows}
    assert [r["id"] for r in rows] == sub["ids"] and len(rows) == 5
    for r in rows:
        assert r["instruction"] == by_id[r["id"]]["instruction"] and r["instruction"].startswith("mine")
        assert r["position"] == int(r["instruction"].split()[-1])  # its row in the source file


def test_export_subset_of_a_select_folder_made_before_the_pool_record(tmp_path, data_dir, capsys):
    folder, sub, _ = _select_once(tmp_path, data_dir, _pool_file(tmp_path / "mine.json", 20, "mine"),
                                  pool_size=10, sample_seed=3)
    info = json.loads((folder / "info.json").read_text())
    del info["pool"]
    (folder / "info.json").write_text(json.dumps(info))
    _later_run_on_another_pool(tmp_path, data_dir)
    out = tmp_path / "subset.jsonl"
    rc, _, err = _cli(["export", "subset", str(folder), "--out", str(out)], capsys)
    assert rc == 0, err  # found through the manifest's earlier invocation (checked ids and size)
    assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == sub["ids"]
    man = tmp_path / "runs" / "x" / "manifest.json"
    data = json.loads(man.read_text())
    data["invocations"] = data["invocations"][-1:]  # only the later run is recorded
    man.write_text(json.dumps(data))
    rc, _, err = _cli(["export", "subset", str(folder), "--out", str(out)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "made before select stages recorded their pool" in err, err
    assert str(folder) in err and "Traceback" not in err


def test_export_subset_refuses_a_pool_file_changed_since(tmp_path, data_dir, capsys):
    src = _pool_file(tmp_path / "mine.json", 20, "mine")
    folder, _, _ = _select_once(tmp_path, data_dir, src, pool_size=10, sample_seed=3)
    _pool_file(src, 20, "edited")
    rc, _, err = _cli(["export", "subset", str(folder), "--out", str(tmp_path / "s.jsonl")], capsys)
    assert rc == 2 and "has changed since" in err and str(src) in err, err


# --------------------------------------------------------------------------- integrity
def _flip_byte(path: Path, at: int, keep_mtime: bool = False) -> None:
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))
    if keep_mtime:  # a careful tool: same size, same mtime (the ctime still changes)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def test_a_same_size_corruption_of_a_large_finished_file_is_found_and_rebuilt(tmp_path):
    """A 2.5 MiB adapter (SmolLM2-135M LoRA r=8 is 2.6 MB) and a 65 MiB weight file: one
    byte flipped in place, size kept (and for the big one the mtime put back): each is
    named as damaged and the stage is rebuilt."""
    from selbench.runs import RunDir, stage_key, verify_folder

    rd = RunDir(tmp_path / "runs")
    key = stage_key("train", "m", {"x": 1})
    payload = {"model/adapter_model.safetensors": os.urandom(5 << 19),
               "model/model.safetensors": os.urandom(65 << 20)}
    builds = []

    def build(tmp: Path) -> None:
        builds.append(1)
        for rel, data in payload.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)

    folder = rd.cached(key, build, log=None)
    assert verify_folder(folder) == []
    for rel, keep in (("model/adapter_model.safetensors", False), ("model/model.safetensors", True)):
        _flip_byte(folder / rel, (folder / rel).stat().st_size // 2, keep_mtime=keep)
        assert verify_folder(folder) == [f"{rel} (content changed)"], rel
        logs = []
        folder = rd.cached(key, build, log=logs.append)
        assert any(l.startswith("[damaged]") and rel in l for l in logs), logs
        assert verify_folder(folder) == [] and (folder / rel).read_bytes() == payload[rel]
    assert len(builds) == 3


def test_verifying_an_untouched_large_file_does_not_hash_it_unless_asked(tmp_path, monkeypatch):
    import selbench.runs as runs

    rd = runs.RunDir(tmp_path / "runs")
    key = runs.stage_key("train", "m", {"x": 2})
    folder = rd.cached(key, lambda t: (t / "model.safetensors").write_bytes(os.urandom(65 << 20)),
                       log=None)
    hashed = []
    real = runs._sha256
    monkeypatch.setattr(runs, "_sha256", lambda p: hashed.append(p.name) or real(p))
    assert runs.verify_folder(folder) == [] and "model.safetensors" not in hashed  # one stat
    hashed.clear()
    monkeypatch.setenv("SELBENCH_VERIFY", "full")
    assert runs.verify_folder(folder) == [] and "model.safetensors" in hashed


# --------------------------------------------------------------------------- YAML alias bombs
def _bomb(indent: str = "    ") -> str:
    """Eight anchors, each nine aliases of the one before: 9^8 = 43 million strings once
    expanded (a "billion laughs" document: a few hundred bytes, milliseconds to parse)."""
    lines = [f'{indent}- &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for c in "bcdefgh":
        lines.append(f"{indent}- &{c} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = c
    return "\n".join(lines) + "\n"


def _refused(e) -> None:
    assert "alias" in str(e) and "refused" in str(e), str(e)


def test_a_yaml_alias_bomb_run_config_is_refused_at_once(tmp_path):
    """The 9-line bomb under a real key made `bench plan` run for minutes."""
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("selector_params:\n  x:\n" + _bomb())
    assert len(cfg.read_text().splitlines()) == 10
    try:
        out = subprocess.run([os.sys.executable, "-m", "selbench.cli", "plan", "--config", str(cfg),
                              "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("bench plan ran for more than 60 s on a YAML alias bomb")
    assert out.returncode == 2 and out.stderr.startswith(f"error: {cfg}: invalid YAML"), out.stderr
    _refused(out.stderr)
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()


def test_every_yaml_selbench_reads_is_bounded(tmp_path, data_dir, capsys):
    from selbench.benchmark.grid import load_grid
    from selbench.config import ConfigError, build_config, parse_override

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("junk:\n" + _bomb("  "))
    # a run config's include
    main = tmp_path / "main.yaml"
    main.write_text(f"include: {bomb.name}\nselector: random\n")
    with pytest.raises(ConfigError) as e:
        build_config([str(main)])
    _refused(e.value)
    assert str(bomb) in str(e.value)
    # a grid file
    grid = tmp_path / "grid.yaml"
    grid.write_text("ratios: [0.1]\nselectors:\n" + _bomb("  "))
    with pytest.raises(ConfigError) as e:
        load_grid(grid)
    _refused(e.value)
    # a judge YAML, and a judge's prompt file
    judge = tmp_path / "judge.yaml"
    judge.write_text("type: openai\nmodel: m\nbase_url: http://127.0.0.1:9/v1\njunk:\n" + _bomb("  "))
    with pytest.raises(ConfigError) as e:
        load_judge(str(judge))
    _refused(e.value)
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("template: '{question} {answer_1} {answer_2}'\njunk:\n" + _bomb("  "))
    judge.write_text(f"type: openai\nmodel: m\nbase_url: http://127.0.0.1:9/v1\nprompt_file: {prompt}\n")
    with pytest.raises(ConfigError) as e:
        load_judge(str(judge))
    _refused(e.value)
    assert str(prompt) in str(e.value)
    # a --set value
    value = "[" + _bomb("").replace("- ", "").replace("\n", ", ").rstrip(", ") + "]"
    with pytest.raises(ConfigError) as e:
        parse_override(f"selector_params.x={value}")
    _refused(e.value)
    # a launch config (accelerate): a problem of the plan, exit 2, nothing computed
    launch = tmp_path / "accel.yaml"
    launch.write_text("distributed_type: MULTI_GPU\nnum_machines: 1\njunk:\n" + _bomb("  "))
    rc, out, err = _cli(["plan", "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir),
                         "--set", "launch.launcher=accelerate", "--set", f"launch.config_file={launch}",
                         "--set", "launch.num_processes=2"], capsys)
    assert rc == 2 and f"[error] {launch}: invalid YAML" in out, out + err
    _refused(out)
    # ordinary anchors and merge keys still load
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {epochs: 1, batch_size: 4}\ntrain:\n  <<: *b\n  max_length: 64\n")
    from selbench.config import load_yaml_layers

    assert load_yaml_layers(ok)["train"] == {"epochs": 1, "batch_size": 4, "max_length": 64}


# --------------------------------------------------------------------------- train config errors
@pytest.mark.parametrize("setting,fragment", [
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.grad_accum=0", "train.grad_accum must be >= 1, got 0"),
    ("train.extra.logging_steps=abc", "train.extra.logging_steps: expected a number, got 'abc'"),
    ("train.extra.max_steps=[1]", "train.extra.max_steps: expected an integer"),
], ids=["batch_size=0", "grad_accum=0", "extra-wrong-type", "extra-list"])
@pytest.mark.parametrize("command", ["run", "plan"])
def test_bad_train_settings_are_one_line_exit_2_and_nothing_computed(tmp_path, capsys, data_dir,
                                                                     command, setting, fragment):
    pool = _pool_file(tmp_path / "pool.json", 8, "p")
    runs = tmp_path / "runs"
    rc, out, err = _cli([command, "--runs-dir", str(runs), "--data-dir", str(data_dir),
                         "--set", f"data.pool={pool}", "--set", "data.eval_sets=[vicuna]",
                         "--set", "judges=[]", "--set", "selector=random", "--set", setting],
                        capsys)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and "ZeroDivisionError" not in err + out and "TypeError" not in err + out
    text = err if err.strip() else out
    assert fragment in text, (out, err)
    if command == "run":
        assert err.startswith("error: ") and len([l for l in err.splitlines() if l.startswith("error")]) == 1
    assert not runs.exists() or not [p for p in runs.rglob("*") if p.is_file() and "DONE" == p.name]


# --------------------------------------------------------------------------- skip counts
def test_skipped_pool_rows_are_reported_by_plan_and_run_and_recorded(tmp_path, data_dir, capsys,
                                                                     monkeypatch):
    """The pool file has a duplicate row and an empty output: `bench plan` and `bench run`
    say so, the select stage's info.json and the manifest record the counts."""
    from selbench.benchmark.pipeline import Pipeline

    pool = _pool_file(tmp_path / "pool.json", 12, "p")
    runs = tmp_path / "runs"
    argv = ["--runs-dir", str(runs), "--data-dir", str(data_dir), "--set", f"data.pool={pool}",
            "--set", "data.eval_sets=[vicuna]", "--set", "data.eval_limit=2", "--set", "judges=[]",
            "--set", "selector=random", "--set", "ratios=[0.5]", "--set", "experiment=skip"]
    rc, out, err = _cli(["plan", *argv], capsys)
    assert "(skipped {'empty_output': 1, 'duplicate': 1})" in out, out

    def stop(self, *a, **k):  # the run stops after its select stage (no training here)
        raise RuntimeError("stopped by the test after selection")

    monkeypatch.setattr(Pipeline, "train", stop)
    rc, out, err = _cli(["run", *argv], capsys)
    assert rc == 2 and "stopped by the test" in err, err
    assert "[data]   pool" in out and "(skipped {'empty_output': 1, 'duplicate': 1})" in out, out
    info = json.loads(next((runs / "skip" / "select").glob("*/info.json")).read_text())
    assert info["pool"]["skipped"] == {"empty_output": 1, "duplicate": 1} and info["pool"]["n"] == 12
    man = json.loads((runs / "skip" / "manifest.json").read_text())["invocations"][-1]
    assert man["resolved"]["pool"]["skipped"] == {"empty_output": 1, "duplicate": 1}


# --------------------------------------------------------------------------- a mistyped runs folder
@pytest.mark.parametrize("argv", [["leaderboard"], ["judge", "--reparse"]], ids=["leaderboard", "reparse"])
def test_a_runs_folder_that_does_not_exist_is_refused(tmp_path, capsys, argv):
    missing = tmp_path / "runz"
    rc, out, err = _cli([*argv, "--runs-dir", str(missing)], capsys)
    assert rc == 2 and err.startswith("error: ") and str(missing) in err and "does not exist" in err, err
    assert not missing.exists() and not list(tmp_path.rglob("leaderboard*"))


def test_a_local_judge_keeps_what_it_computed_when_the_disk_fills(tmp_path, small_disk, monkeypatch):
    """The offline judge computes a whole batch at once: when the disk fills after 3 stored
    answers (on tmpfs the cache's last page still takes a few more), the rest of the batch
    is handed over, rescued and read back: nothing is computed twice."""
    monkeypatch.setenv("SELBENCH_RESCUE_DIR", str(tmp_path / "rescue"))
    a = {"vicuna": [{"id": str(i), "prompt": f"Q{i}?", "answer": f"yes {i}", "reference": f"yes {i}"}
                    for i in range(30)]}
    b = {"vicuna": [{"id": str(i), "prompt": f"Q{i}?", "answer": f"no {i}", "reference": f"yes {i}"}
                    for i in range(30)]}
    recs = build_items(a, b)
    cache_path = small_disk.path / "judge" / "cache.jsonl"
    real_put = CompletionCache.put
    stored = []

    def put(self, key, comp, meta):
        if len(stored) == 3:
            small_disk.fill()
        real_put(self, key, comp, meta)
        stored.append(key)

    monkeypatch.setattr(CompletionCache, "put", put)
    judge = load_judge("offline-refsim-minilm")
    with pytest.raises(DiskFull):
        judge_items(judge, recs, CompletionCache(cache_path), progress=False)
    assert judge.stats["calls"] == 60  # one batch: all computed
    small_disk.free()
    monkeypatch.setattr(CompletionCache, "put", real_put)
    judge2 = load_judge("offline-refsim-minilm")
    counts = judge_items(judge2, recs, CompletionCache(cache_path), progress=False)
    assert counts == {"cached": 60, "new": 0} and judge2.stats["calls"] == 0
    assert len(set(_keys(cache_path))) == 60
