"""Issue 17, a GPU user's first day, checked on a CPU with stand-ins as strict as CUDA: every
launched rank on its own GPU, models loaded in their training dtype (and left to FSDP to
place), precision `auto`, the plan's memory and hours, one gradient profile for every
profile-based selector under the GPT-2 proxy layer, exact SPICE norms."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from selbench import hardware
from selbench.config import TrainConfig, build_config, resolved_train

PAPER = REPO / "configs" / "paper"


class StrictCuda:
    """torch.cuda as the workers see it on a node with ``n`` GPUs: an index >= the device
    count raises (as torch does: "invalid device ordinal"), and a second process binding a
    GPU another rank holds raises too (the crash of every rank on GPU 0)."""

    def __init__(self, n: int):
        self.n, self.taken, self.current = n, {}, None

    def device_count(self) -> int:
        return self.n

    def is_available(self) -> bool:
        return True

    def set_device(self, i: int) -> None:
        if not 0 <= i < self.n:
            raise RuntimeError(f"CUDA error: invalid device ordinal {i}")
        rank = hardware.local_rank()
        if self.taken.get(i, rank) != rank:
            raise RuntimeError(f"GPU {i} is already used by local rank {self.taken[i]}")
        self.taken[i] = rank
        self.current = i


def test_every_launched_rank_gets_its_own_gpu(monkeypatch):
    cuda = StrictCuda(4)
    seen = []
    for rank in range(4):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        seen.append(hardware.rank_device("cuda", cuda))
    assert seen == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"] and cuda.taken == {0: 0, 1: 1, 2: 2, 3: 3}
    monkeypatch.setenv("LOCAL_RANK", "4")  # a fifth process on a 4-GPU node
    with pytest.raises(hardware.RankDeviceError, match="local rank 4 has no GPU of its own"):
        hardware.rank_device("cuda", cuda)
    assert hardware.rank_device("cpu", cuda) == "cpu"  # CPU workers are untouched


def test_the_double_catches_the_old_bug(monkeypatch):
    """Before the fix every rank loaded its model with .to('cuda') = cuda:0; the double
    raises exactly there."""
    cuda = StrictCuda(2)
    monkeypatch.setenv("LOCAL_RANK", "0")
    cuda.set_device(0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="already used by local rank 0"):
        cuda.set_device(0)


@pytest.mark.parametrize("task", ["train", "ifd", "profile"])
def test_every_worker_task_uses_the_rank_device(task, monkeypatch, tmp_path):
    """worker.main runs the same device rule for every task: the task receives cuda:<rank>."""
    from selbench import worker

    got = {}
    monkeypatch.setitem(worker.TASKS, task, lambda spec, device: got.setdefault("device", device))
    monkeypatch.setattr(worker, "watch_driver", lambda spec: None)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"device": "cuda"}))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert worker.main([task, str(spec)], cuda=StrictCuda(2)) == 0
    assert got["device"] == "cuda:1"


class FakeModel:
    def __init__(self):
        self.moved_to = None

    def to(self, device):
        self.moved_to = device
        return self


def test_models_load_in_their_dtype_and_fsdp_places_them(monkeypatch):
    """Issue 17.2: loaded straight in the training dtype; on CUDA onto the rank's device;
    under an accelerate FSDP launch left on the CPU (FSDP shards it; rank 0 reads the weights)."""
    import torch
    import transformers

    from selbench.benchmark import train

    calls = []

    def from_pretrained(name, **kw):
        calls.append(kw)
        return FakeModel()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr("selbench.models.resolve_model", lambda name: name)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    m = train.load_for_training("m", "cuda:1", "bf16")
    assert calls[-1] == {"dtype": torch.bfloat16, "device_map": {"": "cuda:1"}} and m.moved_to is None
    m = train.load_for_training("m", "cpu", "fp32")
    assert calls[-1] == {"dtype": torch.float32} and m.moved_to == "cpu"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    m = train.load_for_training("m", "cuda:3", "bf16")
    assert calls[-1] == {"dtype": torch.bfloat16} and m.moved_to is None  # not placed: FSDP does


def test_precision_auto_resolves_per_device_and_is_in_the_stage_key(monkeypatch):
    t = TrainConfig(precision="auto")
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)  # AVX2-only CPU
    fp32 = resolved_train(t, 1, "cpu")
    monkeypatch.setattr(hardware, "native_bf16", lambda device: True)  # avx512_bf16 / AMX / bf16 GPU
    bf16 = resolved_train(t, 1, "cpu")
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16" and fp32 != bf16
    assert resolved_train(TrainConfig(precision="fp32"), 1, "cpu")["precision"] == "fp32"
    cfg = build_config([str(REPO / "configs" / "default.yaml")])
    assert cfg.train.precision == "auto" and cfg.generate.dtype == "auto" and cfg.proxy.precision == "auto"


def test_cpu_bf16_is_read_from_the_cpu_flags():
    assert hardware.cpu_native_bf16(frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert hardware.cpu_native_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert not hardware.cpu_native_bf16(frozenset({"avx2", "fma", "avx512f"}))


def _plan(files, **over):
    from selbench.benchmark.plan import make_plan

    cfg = build_config([str(f) for f in files], {"selector": "random", **over})
    return make_plan(cfg)


def test_plan_flags_a_13b_full_cell_without_fsdp_and_accepts_it_with(data_dir, tmp_path):
    over = {"data.data_dir": str(data_dir), "runs_dir": str(tmp_path), "data.pool_size": 500}
    plan = _plan([PAPER / "alpaca-llama2-13b-full.yaml"], **over)
    mem = [p for p in plan.problems if p.kind == "needs-memory"]
    assert mem and "13b" in mem[0].message.lower() and "FSDP" in mem[0].message
    fsdp = _plan([PAPER / "alpaca-llama2-13b-full.yaml", PAPER / "launch-8gpu-fsdp.yaml"], **over)
    assert not [p for p in fsdp.problems if p.kind == "needs-memory"]
    assert fsdp.estimates["fsdp"] and fsdp.estimates["train_processes"] == 8
    per_rank = fsdp.estimates["train"][0]["memory"] / 2 ** 30
    assert 8 < per_rank < 40  # ~16 B/param / 8 ranks + activations (checkpointed)
    lora = _plan([PAPER / "alpaca-llama2-13b-lora.yaml"], **over)
    assert not [p for p in lora.problems if p.kind == "needs-memory"]


def test_memory_estimate_against_a_hand_count():
    from selbench.estimates import KNOWN_SHAPES, train_memory

    s = KNOWN_SHAPES["meta-llama/Llama-2-13b-hf"]
    m = train_memory(s, "full", 4, 1024, True, processes=1)
    # bf16 weights, gradients and two AdamW moments: 8 bytes per parameter, unsharded
    assert m.weights + m.gradients + m.optimizer == pytest.approx(8 * s.params)
    sharded = train_memory(s, "full", 4, 1024, True, processes=8, fsdp=True)
    assert sharded.gradients == pytest.approx(2 * s.params / 8)
    acts = 34 * 1024 * 4 * s.hidden * s.layers + 2 * 1024 * 4 * s.vocab * 4
    assert m.activations == pytest.approx(acts)


def test_plan_counts_min_steps_and_reports_hours(data_dir, tmp_path):
    plan = _plan([REPO / "configs" / "default.yaml"], **{"data.data_dir": str(data_dir),
                                                          "runs_dir": str(tmp_path)})
    steps = {t["model"]: t["steps"] for t in plan.estimates["train"]}
    assert steps["random r=0.05"] == 10  # 10 rows, batch 8: 2 per epoch, min_steps 10
    assert all(t["seconds"] > 0 for t in plan.estimates["train"])
    assert "cpu" in plan.estimates["device_class"]


def test_judge_cost_uses_the_dated_list_prices(data_dir, tmp_path, monkeypatch):
    from selbench.benchmark.plan import render_plan

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = build_config([str(REPO / "configs" / "default.yaml")],
                       {"judges": ["gpt-5.1"], "data.data_dir": str(data_dir), "runs_dir": str(tmp_path)})
    from selbench.benchmark.plan import make_plan

    plan = make_plan(cfg)
    j = plan.estimates["judges"][0]
    # 350 + 2 x 128 prompt tokens at $1.25/M + 120 completion tokens at $10/M
    assert j["cost_usd_per_call"] == pytest.approx(((350 + 256) * 1.25 + 120 * 10.0) / 1e6)
    assert "2025-11-13" in j["price_source"]
    assert "judge cost ~$" in render_plan(plan, cfg)


def test_one_profile_for_every_profile_selector_under_the_gpt2_layer():
    """Issue 17.5: gsnr, its ablations, grads and spice-logdet resolve one profile config
    (the shared proxy batch size reaches GrADS' profile too)."""
    from selbench.selectors import SELECTORS, build_selector
    from selbench.selectors.base import ProfileSelector
    from selbench.selectors.proxy.config import profile_key_name

    cfg = build_config([str(PAPER / "proxy-gpt2.yaml")])
    keys = {}
    for name in SELECTORS.names():
        sel = build_selector(name, {}, cfg.proxy)
        if isinstance(sel, ProfileSelector):
            keys[name] = profile_key_name(sel.config.profile, 0)
            assert sel.config.profile.batch_size == 32 and sel.config.profile.proxy == "gpt2"
    assert {"gsnr", "grads", "spice-logdet"} <= set(keys) and len(set(keys.values())) == 1


def test_spice_top_k_uses_exact_norms_even_with_a_projection(tiny_model_dir, tiny_pool_rows):
    """SPICE top_k needs only squared norms: with projection_dim set (as the paper layer does
    for the other SPICE variants) the picks equal the unprojected run."""
    from selbench.data import Pool
    from selbench.selectors import SelectionContext, build_selector

    pool = Pool("tiny", tiny_pool_rows, "test")
    base = {"proxy": tiny_model_dir, "max_length": 48, "batch_size": 8, "pool_size": 12,
            "learning_rate": 1e-2}
    runs = []
    for extra in ({}, {"projection_dim": 16}):
        sel = build_selector("spice", {**base, **extra})
        out = sel.run(pool, 0.25, SelectionContext(seed=0, log=lambda m: None))
        runs.append((out.indices, out.info["projection"]))
    assert runs[0][0] == runs[1][0] and runs[1][1] == "none"


def test_grid_table1_carries_the_launch_layers_its_cells_need():
    from selbench.benchmark.grid import load_grid

    g = load_grid(PAPER / "grid-table1.yaml")
    for name, cfg in g.settings.items():
        if cfg.train.method == "full":
            assert cfg.launch.config_file and "fsdp" in cfg.launch.config_file, name
        assert cfg.launch.num_processes == 8, name
    t2 = load_grid(PAPER / "grid-table2.yaml")
    groups = {(c.data.pool, c.model) for c in t2.settings.values()}
    assert groups == {("alpaca", "meta-llama/Llama-2-7b-hf"), ("alpaca", "meta-llama/Llama-2-13b-hf"),
                      ("alpaca-gpt4", "meta-llama/Llama-2-7b-hf"), ("alpaca-gpt4", "meta-llama/Llama-2-13b-hf")}


def test_grid_dry_run_is_one_summary_and_exits_non_zero_on_problems(capsys, monkeypatch, tmp_path):
    from selbench.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["grid", str(PAPER / "grid-table1.yaml"), "--dry-run", "--runs-dir", str(tmp_path),
               "--set", "data.pool_size=300"])
    out = capsys.readouterr().out
    assert rc == 2
    lines = out.splitlines()
    assert len(lines) < 60, len(lines)  # not one line per cell
    probs = [l for l in lines if l.startswith("  [needs-")]
    assert probs and len(probs) == len(set(probs))  # each distinct problem once ...
    assert all(" of " in l and "cells" in l for l in probs)  # ... with the cells it touches
    assert "distinct (shared stages counted once)" in out and "judge cost ~$" in out


def test_selftest_says_there_is_no_gpu_and_exits_0(capsys):
    from selbench.cli import main

    if hardware.cuda_available():
        pytest.skip("a GPU is visible: the real check runs instead")
    assert main(["selftest", "--device", "cuda"]) == 0
    assert "no CUDA device is visible here: nothing was run" in capsys.readouterr().out


def test_selftest_runs_its_checks_on_the_cpu(tiny_model_dir, tmp_path):
    """The GPU check's own code, on the CPU with a tiny model: every check runs and passes,
    the vLLM and 2-rank checks say why they were skipped, timings are written."""
    from selbench.cli import main

    assert main(["selftest", "--device", "cpu", "--model", tiny_model_dir, "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "selftest-cpu.json").read_text())
    checks = res["checks"]
    for name in ("device", "train_lora", "train_full", "per_example_norms_vs_cpu", "ifd_batched_vs_batch1"):
        assert checks[name]["ok"] is True, (name, checks[name])
    assert checks["per_example_norms_vs_cpu"]["max_rel_diff"] == 0.0  # CPU vs itself
    assert checks["ifd_batched_vs_batch1"]["max_rel_diff"] < 1e-4
    assert checks["vllm_lora_vs_hf"]["ok"] is None and "skipped" in checks["vllm_lora_vs_hf"]
    assert (tmp_path / "selftest-cpu.md").exists() and res["failed"] == []


RUN_CONFIGS = [REPO / "configs" / "default.yaml", REPO / "configs" / "mini" / "base.yaml",
               *sorted(p for p in (REPO / "configs" / "paper").glob("alpaca*.yaml"))]


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.relative_to(REPO / "configs").as_posix() for p in RUN_CONFIGS])
def test_every_shipped_run_config_plans_with_memory_and_hours(path, data_dir, tmp_path):
    """Issue 17, done when: every shipped config plans with memory and hours (on this CPU's
    tiny data: the estimates are per stage, whatever the hardware says about fitting)."""
    over = {"data.data_dir": str(data_dir), "runs_dir": str(tmp_path), "data.pool_size": 200,
            "data.eval_limit": 5, "data.corrupt": {}}
    plan = _plan([path], **over)
    est = plan.estimates
    assert est["train"] and all(t["seconds"] > 0 and t["memory"] > 0 and t["steps"] > 0
                                for t in est["train"])
    assert est["device_class"]
    gen = est.get("generate") or {}
    assert gen.get("seconds_per_model", 0) > 0 and gen.get("memory", 0) > 0


def test_the_plan_estimates_proxy_memory(data_dir, tmp_path):
    """Issue 17.3: memory per stage includes the selection's proxy work, at the selector's
    own resolved settings (the memory model itself is checked by hand above)."""
    from selbench.benchmark.plan import render_plan
    from selbench.config import build_config
    from selbench.estimates import inference_memory, lora_param_count, model_shape, train_memory
    from selbench.selectors import build_selector

    over = {"data.data_dir": str(data_dir), "runs_dir": str(tmp_path), "data.pool_size": 200}
    files = [str(REPO / "configs" / "default.yaml")]
    for name in ("gsnr", "ifd"):
        plan = _plan(files, **{**over, "selector": name})
        cfg = build_config(files, {**over, "selector": name})
        c = build_selector(name, cfg.selector_params, cfg.proxy).config
        if name == "gsnr":
            pc = c.profile
            shape = model_shape(pc.proxy)
            want = train_memory(shape, "lora", pc.batch_size, pc.max_length, False,
                                lora_params=lora_param_count(shape, pc.lora_r)).total
        else:
            want = inference_memory(model_shape(c.proxy), False, c.batch_size, c.max_length).total
        assert plan.estimates["proxy"]["memory"] == want > 0
        sel_line = next(l for l in render_plan(plan, cfg).splitlines() if l.strip().startswith("select ("))
        assert "per device" in sel_line
