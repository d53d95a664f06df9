"""runs.py: stage manifests (DONE), verification and rebuild of damaged stages, per-stage
locks, per-process temp folders, full disks, the runs folder boundary, manifest.json."""
import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selbench.config import ConfigError
from selbench.runs import (DONE, DiskFull, RunDir, StageKey, atomic_write_text, read_done,
                           stage_key, verify_folder, write_manifest)

KEY = StageKey("select", "random-r0.5-s0", "abcdef12")


def _build(tmp: Path) -> None:
    (tmp / "small.json").write_text(json.dumps({"a": 1}))
    (tmp / "answers.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(5)))
    (tmp / "model").mkdir()
    (tmp / "model" / "big.bin").write_bytes(os.urandom(3 << 20))  # > 1 MiB: size only


def _quiet(_msg):
    pass


def test_done_is_a_manifest_of_the_stage(tmp_path):
    rd = RunDir(tmp_path)
    folder = rd.cached(KEY, _build, {"x": 1}, log=_quiet)
    man = json.loads((folder / DONE).read_text())
    files = man["files"]
    assert set(files) == {"config.yaml", "small.json", "answers.jsonl", "model/big.bin"}
    assert files["answers.jsonl"]["lines"] == 5 and "sha256" in files["small.json"]
    # every file has its sha256 (issue 22: a same-size edit of a file >= 1 MiB was missed)
    assert "sha256" in files["model/big.bin"] and files["model/big.bin"]["size"] == 3 << 20
    assert man["counts"]["files"] == 4
    assert rd.verify(KEY) == [] and rd.done(KEY)


@pytest.mark.parametrize("damage,name", [
    (lambda f: (f / "model" / "big.bin").write_bytes(b"x" * 100), "model/big.bin"),  # truncated adapter
    (lambda f: (f / "small.json").write_text('{"a": 2}'), "small.json"),  # corrupt result.json
    (lambda f: (f / "answers.jsonl").write_text(
        "".join(json.dumps({"id": i}) + "\n" for i in range(4)) + "{}\n"), "answers.jsonl"),
    (lambda f: (f / "small.json").unlink(), "small.json (missing)"),
    (lambda f: (f / DONE).write_text("{torn"), "DONE"),
], ids=["truncated-big", "edited-small", "jsonl-line-replaced", "missing", "corrupt-DONE"])
def test_damage_is_named_and_the_stage_rebuilt(tmp_path, damage, name):
    rd = RunDir(tmp_path)
    folder = rd.cached(KEY, _build, log=_quiet)
    damage(folder)
    damaged = rd.verify(KEY)
    assert damaged and any(d.startswith(name) for d in damaged), damaged
    assert not rd.done(KEY)
    logs, builds = [], []
    rd.cached(KEY, lambda t: (builds.append(1), _build(t)), log=logs.append)
    assert builds == [1]
    assert any(m.startswith("[damaged]") and name.split(" ")[0] in m for m in logs), logs
    assert rd.verify(KEY) == []


def test_truncated_npy_is_noticed(tmp_path):
    import numpy as np

    rd = RunDir(tmp_path)
    folder = rd.cached(KEY, lambda t: np.save(t / "scores.npy", np.arange(1000.0)), log=_quiet)
    p = folder / "scores.npy"
    p.write_bytes(p.read_bytes()[:-8])
    assert rd.verify(KEY) == ["scores.npy (size 8120, expected 8128)"]


def test_legacy_empty_done_is_accepted_unverified(tmp_path):
    rd = RunDir(tmp_path)
    folder = rd.path(KEY)
    folder.mkdir(parents=True)
    (folder / "subset.json").write_text("{}")
    (folder / DONE).write_text("")
    assert read_done(folder) == {} and rd.done(KEY)
    logs = []
    rd.cached(KEY, lambda t: pytest.fail("must not rebuild"), log=logs.append)
    assert logs[0].startswith("[cached]")


def test_reparse_style_rewrite_reseals_the_manifest(tmp_path):
    rd = RunDir(tmp_path)
    folder = rd.cached(KEY, _build, log=_quiet)
    atomic_write_text(folder / "small.json", '{"a": "reparsed"}')
    assert rd.verify(KEY) == []
    assert verify_folder(folder) == []


def test_build_failure_leaves_no_temp_folder(tmp_path):
    rd = RunDir(tmp_path)

    def boom(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        rd.cached(KEY, boom, log=_quiet)
    assert not list(rd.path(KEY).parent.glob(".tmp-*")) and not rd.path(KEY).exists()


def test_full_disk_during_a_build_is_named_and_a_rerun_finishes(tmp_path):
    rd = RunDir(tmp_path)

    def full(tmp):
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull) as e:
        rd.cached(KEY, full, log=_quiet)
    assert e.value.errno == errno.ENOSPC and KEY.key in str(e.value) and "free space" in str(e.value)
    assert not list(rd.path(KEY).parent.glob(".tmp-*")) and not rd.path(KEY).exists()
    # safetensors reports a full disk as its own error type, not OSError
    with pytest.raises(DiskFull):
        rd.cached(KEY, lambda t: (_ for _ in ()).throw(
            Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")),
            log=_quiet)
    a = rd.cached(KEY, _build, log=_quiet)
    assert rd.verify(KEY) == [] and (a / "small.json").exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_only_stale_temp_folders_are_removed(tmp_path):
    rd = RunDir(tmp_path)
    parent = rd.path(KEY).parent
    parent.mkdir(parents=True)
    dead = parent / f".tmp-{KEY.key}-{_dead_pid()}"
    live = parent / f".tmp-{KEY.key}-{os.getppid()}"  # a live process (pytest's parent)
    legacy = parent / f".tmp-{KEY.key}"  # older versions: one name for everyone
    other = parent / ".tmp-other-key-1"
    for d in (dead, live, legacy, other):
        d.mkdir()
    rd.cached(KEY, _build, log=_quiet)
    assert not dead.exists() and not legacy.exists()
    assert live.exists() and other.exists()


def test_paths_stay_inside_the_runs_folder(tmp_path):
    rd = RunDir(tmp_path / "runs" / "exp")
    for bad in (StageKey("judge/../../..", "x", "1"), StageKey("select", "../../x", "1"),
                StageKey("/etc", "x", "1")):
        with pytest.raises(ConfigError, match="outside the runs folder"):
            rd.path(bad)
    assert rd.path(stage_key("select", "ok", {})).parent == tmp_path / "runs" / "exp" / "select"


def _worker(root, out, delay):
    from selbench.runs import RunDir, StageKey

    def build(tmp):
        with open(os.path.join(root, "builds.txt"), "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(delay)
        (tmp / "result.json").write_text(json.dumps({"by": os.getpid()}))

    logs = []
    folder = RunDir(root).cached(StageKey("train", "full", "12345678"), build, log=logs.append)
    Path(out).write_text(json.dumps({"folder": str(folder), "logs": logs,
                                     "result": json.loads((folder / "result.json").read_text())}))


def test_two_processes_build_a_stage_once(tmp_path):
    ctx = mp.get_context("fork")
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), str(o), 1.5)) for o in outs]
    for p in procs:
        p.start()
        time.sleep(0.2)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    res = [json.loads(o.read_text()) for o in outs]
    assert len((tmp_path / "builds.txt").read_text().split()) == 1
    assert res[0]["folder"] == res[1]["folder"] and res[0]["result"] == res[1]["result"]
    assert sorted(r["logs"][-1].split()[0] for r in res) == ["[cached]", "[run]"]
    assert not list((tmp_path / "train").glob(".tmp-*"))


def test_corrupt_manifest_is_kept_not_silently_replaced(tmp_path, capsys):
    root = tmp_path / "exp"
    for i in range(3):
        write_manifest(root, ["bench", str(i)], {}, {})
    assert len(json.loads((root / "manifest.json").read_text())["invocations"]) == 3
    (root / "manifest.json").write_text('{"invocations": [{"command"')  # torn
    write_manifest(root, ["bench", "3"], {}, {})
    assert "manifest.json.damaged-1" in capsys.readouterr().err
    assert (root / "manifest.json.damaged-1").read_text().startswith('{"invocations"')
    assert len(json.loads((root / "manifest.json").read_text())["invocations"]) == 1


def test_runs_dir_that_is_a_file_is_a_clear_error(tmp_path):
    f = tmp_path / "runs"
    f.write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        write_manifest(f / "exp", ["bench"], {}, {})


def test_a_finishing_run_updates_its_own_manifest_entry(tmp_path):
    root = tmp_path / "exp"
    write_manifest(root, ["bench", "mine"], {}, {})
    man = json.loads((root / "manifest.json").read_text())
    man["invocations"].append({"command": ["bench", "other"], "pid": -1, "finished": False})
    (root / "manifest.json").write_text(json.dumps(man))  # a concurrent run started since
    write_manifest(root, ["bench", "mine"], {}, {}, {"train/x": "p"}, update_last=True)
    inv = json.loads((root / "manifest.json").read_text())["invocations"]
    assert [e["command"][1] for e in inv] == ["mine", "other"]
    assert inv[0]["finished"] and inv[0]["stages"] == {"train/x": "p"} and not inv[1]["finished"]
