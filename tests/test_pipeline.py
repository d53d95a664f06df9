"""Pipeline: stage caching, resume after a crash, manifest, leaderboard (tiny model)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from selbench.config import build_config


def write_config(tmp_path, tiny_model_dir, data_dir, rows, **extra) -> Path:
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    cfg = {
        "experiment": "t", "runs_dir": str(tmp_path / "runs"), "model": tiny_model_dir,
        "selector": "random", "ratios": [0.25], "judges": ["offline-refsim-minilm"],
        "data": {"pool": str(pool), "data_dir": str(data_dir), "eval_sets": ["vicuna", "wizardlm"],
                 "eval_limit": 2},
        "train": {"epochs": 1, "batch_size": 4, "max_length": 64, "learning_rate": 1e-3},
        "generate": {"max_new_tokens": 6, "batch_size": 4},
    }
    cfg.update(extra)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_resume_after_crash_recomputes_nothing_finished(tmp_path, tiny_model_dir, data_dir,
                                                        tiny_pool_rows, monkeypatch):
    from selbench.benchmark import pipeline as pl, train as tr

    cfg = build_config([str(write_config(tmp_path, tiny_model_dir, data_dir, tiny_pool_rows))])
    calls = {"train": 0}
    real_train = tr.train_model

    def counting_train(*a, **k):
        calls["train"] += 1
        return real_train(*a, **k)

    monkeypatch.setattr(pl, "train_model", counting_train)

    def crash(self, *a, **k):
        raise KeyboardInterrupt("simulated crash during judging")

    monkeypatch.setattr(pl.Pipeline, "judge", crash)
    with pytest.raises(KeyboardInterrupt):
        pl.Pipeline(cfg, progress=False, log=lambda m: None).run(["bench", "run"])
    assert calls["train"] == 2  # full-data model + subset model
    root = tmp_path / "runs" / "t"
    done_before = sorted(p.parent.relative_to(root) for p in root.glob("*/*/DONE"))
    assert any(str(p).startswith("train/full-") for p in done_before)
    assert len([p for p in done_before if str(p).startswith("generate/")]) == 2

    monkeypatch.undo()
    monkeypatch.setattr(pl, "train_model", counting_train)
    logs = []
    results = pl.Pipeline(cfg, progress=False, log=logs.append).run(["bench", "run"])
    assert calls["train"] == 2  # nothing retrained
    assert not any(m.startswith("[run]") and ("train/" in m or "generate/" in m or "select/" in m)
                   for m in logs), logs
    assert len(results) == 1
    pooled = results[0]["summary"]["pooled"]
    assert pooled["n"] == 4 and pooled["win"] + pooled["tie"] + pooled["lose"] + pooled["unparsed"] == 4
    assert results[0]["judge_kind"] == "offline"
    # judgments keep both raw orders
    jl = next(root.glob("judge/offline-refsim-minilm/*/judgments.jsonl")).read_text().splitlines()
    row = json.loads(jl[0])
    assert row["raw_ab"] and row["raw_ba"] and row["outcome"] in ("win", "tie", "lose", "unparsed")
    # third run: everything cached, including the judge
    logs.clear()
    pl.Pipeline(cfg, progress=False, log=logs.append).run(["bench", "run"])
    assert not any(m.startswith("[run]") for m in logs)
    man = json.loads((root / "manifest.json").read_text())["invocations"]
    assert man[-1]["finished"] and man[-1]["seeds"]["seed"] == 0 and "torch" in man[-1]["versions"]
    assert man[-1]["command"] == ["bench", "run"]
    # timestamps and per-stage durations: the second run judged (ran), the third cached all
    from datetime import datetime

    second, third = man[-2], man[-1]
    for inv in (second, third):
        t0, t1 = (datetime.fromisoformat(inv[k]) for k in ("started_at", "finished_at"))
        assert t0.tzinfo is not None and t0 <= t1 and inv["wall_seconds"] >= 0
        assert {t["stage"] for t in inv["stage_times"]} == set(inv["stages"])
        assert all(t["seconds"] >= 0 and datetime.fromisoformat(t["started_at"]) >= t0
                   for t in inv["stage_times"])
    ran = {t["stage"].split("/")[0] for t in second["stage_times"] if t["status"] == "run"}
    assert ran == {"judge"} and all(t["status"] == "cached" for t in third["stage_times"])
    assert all(not any(ch.isdigit() and len(part) == 14 for ch in part) for part in os.listdir(root))
    # leaderboard
    lb = (tmp_path / "runs" / "leaderboard.md").read_text()
    assert "random" in lb and "offline-refsim-minilm (offline, not an LLM)" in lb
    csv = (tmp_path / "runs" / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == 1 + 3  # header + pooled + two sets


def test_trained_weights_change_and_loss_is_logged(tmp_path, tiny_model_dir, tiny_pool_rows):
    import torch
    from safetensors.torch import load_file

    from selbench.benchmark.train import train_model
    from selbench.config import TrainConfig

    out = tmp_path / "tr"
    out.mkdir()
    info = train_model(tiny_model_dir, tiny_pool_rows[:8], TrainConfig(epochs=1, batch_size=4,
                       max_length=64, learning_rate=1e-2, method="lora"), out, progress=False)
    assert info["steps"] == 2
    w = load_file(out / "model" / "adapter_model.safetensors")
    b = [v for k, v in w.items() if "lora_B" in k]
    assert b and any(torch.count_nonzero(t) > 0 for t in b)  # B starts at zero: it moved
    lines = (out / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,learning_rate" and len(lines) == 3


@pytest.mark.slow
def test_kill_dash_9_then_same_command_finishes(tmp_path, tiny_model_dir, data_dir, tiny_pool_rows):
    cfg = write_config(tmp_path, tiny_model_dir, data_dir, tiny_pool_rows)
    cmd = [sys.executable, "-m", "selbench.cli", "run", "--config", str(cfg), "--quiet"]
    root = tmp_path / "runs" / "t"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(root.glob("train/full-*/DONE")):
        time.sleep(0.2)
    assert list(root.glob("train/full-*/DONE")), "first stage never finished"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    full = next(root.glob("train/full-*"))
    mtime = (full / "DONE").stat().st_mtime
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert re.search(rf"\[cached\] stage \d+/\d+ train/{full.name}", out.stdout), out.stdout[-2000:]
    assert (full / "DONE").stat().st_mtime == mtime
    assert not list(root.glob("*/.tmp-*")) and not list(root.glob("judge/*/.tmp-*"))
