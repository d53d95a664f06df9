"""Launched stages: 2-process (gloo, CPU) training under torchrun equals one process with
the same effective batch; sharded scoring equals a single-process run and resumes."""
import csv
import json

import numpy as np
import pytest
import torch

from selbench.config import LaunchConfig, TrainConfig, grad_accum_for, resolved_train


def _losses(folder):
    with (folder / "loss.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_effective_batch_is_kept_whatever_the_number_of_processes():
    t = TrainConfig(batch_size=4, effective_batch=128)
    assert grad_accum_for(t, 1) == 32 and grad_accum_for(t, 8) == 4
    # the split is not part of the train stage's cache key; the resolved recipe is
    key = resolved_train(t, 1, "cpu")
    assert key == resolved_train(TrainConfig(batch_size=8, grad_accum=3, effective_batch=128), 8, "cpu")
    assert key != resolved_train(TrainConfig(batch_size=4, effective_batch=64), 1, "cpu")


def test_the_process_count_is_in_the_train_key_when_effective_batch_is_unset():
    """Issue 22: 2 processes x batch 4 train with batch 8 per step; 1 process with batch 4."""
    t = TrainConfig(batch_size=4)
    one, two = resolved_train(t, 1, "cpu"), resolved_train(t, 2, "cpu")
    assert one["effective_batch"] == 4 and two["effective_batch"] == 8 and one != two
    # and the same examples per step are the same recipe, however split
    assert two == resolved_train(TrainConfig(batch_size=8), 1, "cpu")
    assert two == resolved_train(TrainConfig(batch_size=2, grad_accum=2), 2, "cpu")


@pytest.mark.slow
def test_two_process_training_equals_one_process(tmp_path, tiny_model_dir, tiny_pool_rows):
    """Same effective batch (8): 1 process x batch 2 x accumulation 4 vs 2 processes (gloo) x
    batch 2 x accumulation 2. Each optimizer step sees the same 8 examples (accelerate hands
    rank r every r-th batch of the one seeded order) and the loss is the token mean over them,
    so the runs differ only by float summation order: losses agree to 1e-4 relative and the
    adapters to 1e-4 (fp32). Plain SGD makes the weight comparison meaningful: Adam's first
    step is ~lr * sign(g), so a 1e-9 gradient entry whose sign flips with summation order
    moves a weight by 2 lr, which says nothing about the launcher. LoRA dropout is off: each
    rank draws its own dropout masks, so with dropout the runs agree only in distribution."""
    from safetensors.torch import load_file

    from selbench.benchmark.train import train_model
    from selbench.config import to_dict
    from selbench.launch import run_workers, write_job_rows

    rows = tiny_pool_rows[:16]
    cfg = TrainConfig(method="lora", batch_size=2, effective_batch=8, epochs=1,
                      warmup_ratio=0.0, max_length=64, seed=0, lr_scheduler="constant",
                      learning_rate=0.5, lora_dropout=0.0, extra={"optim": "sgd"})
    one = tmp_path / "one"
    one.mkdir()
    info1 = train_model(tiny_model_dir, rows, cfg, one, progress=False, processes=1)
    two = tmp_path / "two"
    two.mkdir()
    job = tmp_path / "job"
    write_job_rows(job / "rows.jsonl", rows)
    run_workers("train", {"model": tiny_model_dir, "rows_file": str(job / "rows.jsonl"),
                          "train": to_dict(cfg), "out": str(two), "device": "cpu", "processes": 2},
                LaunchConfig(launcher="torchrun", num_processes=2), job, log=lambda m: None)
    info2 = json.loads((two / "train.json").read_text())
    assert info1["steps"] == info2["steps"] == 2
    assert (info1["grad_accum"], info2["grad_accum"]) == (4, 2)
    assert info1["effective_batch"] == info2["effective_batch"] == 8
    assert info2["examples_trained"] == 16 and info2["processes"] == 2
    np.testing.assert_allclose(_losses(one), _losses(two), rtol=1e-4)
    w1 = load_file(one / "model" / "adapter_model.safetensors")
    w2 = load_file(two / "model" / "adapter_model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-6)
    moved = [k for k in w1 if "lora_B" in k]
    assert moved and all(torch.count_nonzero(w1[k]) > 0 for k in moved)  # B left zero: trained


def _ctx(tmp_path, launch=None):
    from selbench.selectors.base import SelectionContext

    return SelectionContext(seed=0, log=lambda m: None, progress=False, launch=launch,
                            shard_root=tmp_path / "shards", pool_key="p")


@pytest.mark.slow
def test_sharded_ifd_two_processes_equal_one_and_resume_per_shard(tmp_path, tiny_model_dir,
                                                                   tiny_pool_rows, monkeypatch):
    from selbench.models import load_model, load_tokenizer
    from selbench.selectors import ifd

    monkeypatch.setattr(ifd, "IFD_SHARD_SIZE", 5)  # 24 rows -> 5 shards
    cfg = ifd.IFDConfig(proxy=tiny_model_dir, max_length=64, batch_size=4)
    ref = ifd.ifd_scores(load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir),
                         tiny_pool_rows, 64, 1)
    two = ifd.sharded_ifd_scores(tiny_pool_rows, cfg,
                                 _ctx(tmp_path, LaunchConfig("torchrun", 2, stages=["score"])))
    np.testing.assert_allclose([r["ifd"] for r in two], [r["ifd"] for r in ref], rtol=1e-6)
    assert [r["status"] for r in two] == [r["status"] for r in ref]
    shards = sorted((tmp_path / "shards").glob("ifd-*/shard-*.npz"))
    assert len(shards) == 5
    # a crash that lost shard 3: only that shard is computed again
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[3].unlink()
    again = ifd.sharded_ifd_scores(tiny_pool_rows, cfg, _ctx(tmp_path))
    np.testing.assert_allclose([r["ifd"] for r in again], [r["ifd"] for r in two], rtol=1e-6)
    for p in sorted((tmp_path / "shards").glob("ifd-*/shard-*.npz")):
        assert (p.stat().st_mtime_ns == mtimes[p.name]) == (p.name != shards[3].name)


@pytest.mark.slow
def test_sharded_profile_two_processes_equal_one_and_resume_per_member(tmp_path, tiny_model_dir,
                                                                      tiny_pool_rows):
    from selbench.selectors.proxy.config import ProfileConfig
    from selbench.selectors.proxy.profile import build_profile

    cfg = ProfileConfig(proxy=tiny_model_dir, members=3, epochs=2, batch_size=4, max_length=64,
                        learning_rate=1e-2, projection_dim=16, seed=0)
    one = build_profile(tiny_pool_rows, cfg, progress=False)
    shard_dir = tmp_path / "members"
    two = build_profile(tiny_pool_rows, cfg, progress=False, shard_dir=shard_dir,
                        launch=LaunchConfig("torchrun", 2, stages=["score"]), log=lambda m: None)
    np.testing.assert_allclose(two.norms, one.norms, rtol=1e-5)
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5)
    np.testing.assert_allclose(two.projections, one.projections, rtol=1e-4, atol=1e-6)
    # a crash after members 0 and 2: only member 1 is trained again
    (shard_dir / "shard-00001.npz").unlink()
    kept = (shard_dir / "shard-00000.npz").stat().st_mtime_ns
    again = build_profile(tiny_pool_rows, cfg, progress=False, shard_dir=shard_dir)
    np.testing.assert_allclose(again.norms, one.norms, rtol=1e-5)
    assert (shard_dir / "shard-00000.npz").stat().st_mtime_ns == kept
