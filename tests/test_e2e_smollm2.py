"""Slow end-to-end run on the real embedded SmolLM2 and the real shared data (CI runs it)."""
import json

import pytest

from selbench.config import build_config


@pytest.mark.slow
def test_bench_run_end_to_end_on_real_smollm2(tmp_path, data_dir):
    from selbench.benchmark.pipeline import Pipeline

    cfg = build_config([], {
        "experiment": "e2e", "runs_dir": str(tmp_path / "runs"), "selector": "random",
        "ratios": [0.25], "judges": ["offline-refsim-minilm"],
        "data.pool": "alpaca", "data.data_dir": str(data_dir), "data.pool_size": 8,
        "data.eval_limit": 2, "data.eval_sets": ["wizardlm", "vicuna"],
        "train.epochs": 1, "train.batch_size": 4, "train.max_length": 128,
        "generate.max_new_tokens": 16, "generate.batch_size": 4,
    })
    results = Pipeline(cfg, progress=False).run(["bench", "run"])
    root = tmp_path / "runs" / "e2e"
    assert len(results) == 1
    r = results[0]
    assert r["n_selected"] == 2 and r["pool_size"] == 8
    assert r["summary"]["pooled"]["n"] == 4
    answers = [json.loads(l) for g in root.glob("generate/*/wizardlm.jsonl")
               for l in g.read_text().splitlines()]
    assert len(answers) == 4 and all(isinstance(a["answer"], str) for a in answers)
    assert any(a["answer"].strip() for a in answers)
    assert (tmp_path / "runs" / "leaderboard.md").exists()
