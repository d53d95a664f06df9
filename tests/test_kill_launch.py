"""Issue 22: killing the driver of a launched stage leaves no worker behind and nothing
published. ``bench run`` trains under torchrun x2 (gloo, CPU); the driver gets SIGTERM,
SIGINT or SIGKILL while both workers run; every worker and the launcher must be gone within
seconds, no stage folder may appear (now or later), and the same command must then finish.
Plus the workers' own watch of the driver, alone: a killed driver that is not reaped yet (a
zombie) counts as gone."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from selbench.launch import _process_start
from selbench.runs import verify_folder

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _alive(pid: int) -> bool:
    """Running (a zombie, killed and waiting to be reaped, counts as gone)."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return st not in ("Z", "X")


def _children(pid: int) -> list[int]:
    out = []
    for t in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(x) for x in t.read_text().split()]
        except OSError:
            pass
    return out


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- the watch alone
WORKER = """
import sys, time
from selbench.launch import watch_driver
watch_driver({"driver_pid": int(sys.argv[1]), "driver_start": sys.argv[2],
              "pid_dir": sys.argv[3]}, interval=0.1)
print("watching", flush=True)
time.sleep(120)
"""


def test_a_worker_exits_by_itself_when_its_driver_is_killed_even_unreaped(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(driver.pid),
                                   str(_process_start(driver.pid)), str(tmp_path / "pids")],
                                  stdout=subprocess.PIPE, text=True, env=_env())
        assert worker.stdout.readline().strip() == "watching"
        assert (tmp_path / "pids" / "rank-0.pid").read_text() == str(worker.pid)
        time.sleep(0.5)
        assert worker.poll() is None  # a live driver: the worker goes on
        t0 = time.time()
        os.kill(driver.pid, signal.SIGKILL)  # not reaped: a zombie until driver.wait()
        rc = worker.wait(timeout=10)
        assert rc == 70 and time.time() - t0 < 3, (rc, time.time() - t0)
    finally:
        for p in (driver, locals().get("worker")):
            if p is not None and p.poll() is None:
                p.kill()
        driver.wait()


# --------------------------------------------------------------------------- real bench run
def _config(tmp_path: Path, model: str, data_dir: Path) -> Path:
    rng = random.Random(0)
    rows = [{"instruction": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + f" {i}",
             "input": "", "output": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20)))}
            for i in range(16)]
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    # ratio 1: the subset model is the full-data model, so one launched train stage
    cfg = {"experiment": "t", "runs_dir": str(tmp_path / "runs"), "model": model,
           "selector": "random", "ratios": [1.0], "judges": ["offline-refsim-minilm"],
           "data": {"pool": str(pool), "data_dir": str(data_dir), "eval_sets": ["vicuna"],
                    "eval_limit": 2},
           "train": {"epochs": 4, "batch_size": 4, "max_length": 48, "learning_rate": 1e-3},
           "launch": {"launcher": "torchrun", "num_processes": 2, "stages": ["train"]},
           "generate": {"max_new_tokens": 6, "batch_size": 4}, "device": "cpu", "threads": 1}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "selbench.cli", "run", "--config", str(cfg), "--quiet"]


def _published(train: Path) -> list[Path]:
    return [p for p in train.glob("*") if not p.name.startswith(".")]


EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT],
                         ids=["SIGTERM", "SIGKILL", "SIGINT"])
def test_killing_bench_run_stops_its_two_gloo_workers_and_publishes_nothing(
        tmp_path, tiny_model_dir, data_dir, sig):
    cfg = _config(tmp_path, tiny_model_dir, data_dir)
    train = tmp_path / "runs" / "t" / "train"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(_cmd(cfg), stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.time() + 300
        pid_files: list[Path] = []
        while time.time() < deadline and proc.poll() is None and len(pid_files) < 2:
            pid_files = sorted(train.glob(".job-*/pids/rank-*.pid"))
            time.sleep(0.1)
        assert len(pid_files) == 2, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(random.Random(22).uniform(1.0, 3.0))  # into the workers' task
        workers = [int(p.read_text()) for p in pid_files]
        launcher = _children(proc.pid)
        assert launcher and all(map(_alive, workers + launcher)), (workers, launcher)
        t0 = time.time()
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        driver_s = time.time() - t0
        while time.time() - t0 < 30 and any(map(_alive, workers + launcher)):
            time.sleep(0.05)
        gone_s = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    left = [p for p in workers + launcher if _alive(p)]
    for p in left:  # never leave them to other tests
        os.kill(p, signal.SIGKILL)
    print(f"\n{sig.name}: driver exited in {driver_s:.2f}s (rc {rc}), workers and launcher "
          f"gone {gone_s:.2f}s after the signal")
    assert not left, f"{sig.name}: processes outlived the driver: {left}"
    assert gone_s < 15, f"{sig.name}: workers took {gone_s:.1f}s to stop"
    assert rc == EXIT[sig], (rc, (tmp_path / "first.log").read_text()[-2000:])
    if sig != signal.SIGKILL:
        err = (tmp_path / "first.log").read_text()
        assert "rerun the same command to resume" in err and "Traceback" not in err, err[-2000:]
    # nothing published, now or later; the dead run's temp folder holds no weights
    time.sleep(2)
    assert not _published(train), _published(train)
    assert not list(train.glob(".tmp-*/model")), list(train.glob(".tmp-*/*"))

    out = subprocess.run(_cmd(cfg), capture_output=True, text=True, timeout=600, env=_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    done = _published(train)
    assert len(done) == 1 and (done[0] / "DONE").exists() and not verify_folder(done[0])
    assert json.loads((done[0] / "train.json").read_text())["processes"] == 2
    assert not list((tmp_path / "runs" / "t").rglob(".tmp-*"))
