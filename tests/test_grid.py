"""`bench grid`: expansion of every shipped grid file, shared stages, keep going on a failed
cell, resume (tiny model)."""
import json
from pathlib import Path

import pytest
import yaml

from selbench.benchmark.grid import load_grid, plan_grid, render_grid_plan, render_summary, run_grid
from selbench.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
GRIDS = (sorted(REPO.glob("configs/grid-*.yaml")) + sorted(REPO.glob("configs/paper/grid-*.yaml"))
         + [REPO / "configs" / "mini" / "grid.yaml"])


def test_there_are_grid_configs():
    names = {p.name for p in GRIDS}
    assert {"grid-smoke.yaml", "grid-table1.yaml", "grid-table2.yaml"} <= names


@pytest.mark.parametrize("path", GRIDS, ids=[p.name for p in GRIDS])
def test_every_shipped_grid_expands(path):
    g = load_grid(path)
    assert g.cells and len({(c.cfg.runs_dir, c.cfg.experiment) for c in g.cells}) == 1
    for c in g.cells:
        assert c.cfg.ratios == [c.ratio] and c.cfg.seed == c.seed and c.cfg.selector == c.selector
    if path.name == "grid-smoke.yaml":
        sel = [(c.label, c.seed, c.ratio) for c in g.cells]
        assert ("random", 1, 0.1) in sel and ("ifd", 0, 0.05) in sel and ("gsnr", 0, 0.1) in sel
        assert ("gsnr-drop", 0, 0.05) in sel and ("gsnr-drop", 0, 0.1) not in sel
        assert ("longest", 0, 0.05) in sel and ("perplexity", 0, 0.1) in sel
        assert all(c.cfg.proxy.record == "train" for c in g.cells)
        # base default.yaml (model, judge, LoRA recipe), made smaller by the grid's `set:`
        assert all(c.cfg.data.pool_size == 100 and c.cfg.data.eval_limit == 5 for c in g.cells)
        assert all(c.cfg.train.lora_r == 8 and c.cfg.model == "smollm2-135m-instruct" for c in g.cells)
    if path.name == "grid-table1.yaml":
        assert len(g.settings) == 8
        assert {c.cfg.train.method for c in g.cells} == {"lora", "full"}
        assert {c.cfg.data.pool for c in g.cells} == {"alpaca", "alpaca-gpt4"}
        assert {c.cfg.model for c in g.cells} == {"meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf"}
        assert all(c.cfg.proxy.model == "gpt2" and c.cfg.experiment == "paper" for c in g.cells)
        assert len(g.cells) == 8 * (3 + 7) * 3  # random x 3 seeds + 7 selectors, 3 ratios
        assert {"longest", "perplexity"} <= {c.selector for c in g.cells}
    if path.parent.name == "mini":  # the mini study: controls first, one noisy pool
        sel = [(c.label, c.seed, c.ratio) for c in g.cells]
        assert sel[:5] == [("oracle-clean", 0, 0.1), ("oracle-corrupt", 0, 0.1), ("random", 0, 0.1),
                           ("random", 1, 0.1), ("random", 2, 0.1)]
        assert {c.selector for c in g.cells} == {"oracle-clean", "oracle-corrupt", "random", "longest",
                                                 "ifd", "perplexity", "gsnr"}
        d = g.cells[0].cfg.data
        assert d.corrupt == {"fraction": 0.2, "seed": 0} and d.pool_size == 400
        assert d.eval_limit == 50 and d.reference_sets == ["wizardlm", "vicuna"]
        assert d.reference_max_length == 256 and g.cells[0].cfg.experiment == "mini"
    if path.name == "grid-table2.yaml":
        assert {c.selector for c in g.cells} == {"gsnr", "gsnr-drop", "gsnr-reldrop", "gsnr-drop-var"}


def test_lists_of_pools_models_regimes_are_crossed(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"experiment": "x", "data": {"pool_size": 10}}))
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({
        "base": ["base.yaml"], "pools": ["alpaca", "alpaca-gpt4-partial"],
        "models": ["smollm2-135m-instruct", "gemma3-270m"], "regimes": ["lora", "full"],
        "selectors": [{"name": "random", "seeds": [0, 1, 2]}, "ifd"], "ratios": [0.1, 0.2],
        "set": {"train": {"epochs": 2}}}))
    g = load_grid(grid)
    assert len(g.settings) == 8 and len(g.cells) == 8 * (3 + 1) * 2
    assert all(c.cfg.train.epochs == 2 and c.cfg.data.pool_size == 10 for c in g.cells)
    assert {(c.cfg.data.pool, c.cfg.model, c.cfg.train.method) for c in g.cells} == {
        (p, m, r) for p in ("alpaca", "alpaca-gpt4-partial")
        for m in ("smollm2-135m-instruct", "gemma3-270m") for r in ("lora", "full")}


def test_bad_grid_files_name_the_problem(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text(yaml.safe_dump({"selector": ["random"], "ratios": [0.1]}))
    with pytest.raises(ConfigError, match="unknown grid key 'selector'; did you mean 'selectors'"):
        load_grid(g)
    g.write_text(yaml.safe_dump({"selectors": ["randm"], "ratios": [0.1]}))
    with pytest.raises(Exception, match="did you mean 'random'"):
        load_grid(g)
    g.write_text(yaml.safe_dump({"selectors": ["random"], "ratios": [0.1],
                                 "set": {"train": {"learning_rat": 1}}}))
    with pytest.raises(ConfigError, match="learning_rat"):
        load_grid(g)


def _tiny_grid(tmp_path, tiny_model_dir, data_dir, rows) -> Path:
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    base = {"experiment": "g", "runs_dir": str(tmp_path / "runs"), "model": tiny_model_dir,
            "judges": ["offline-refsim-minilm"],
            "data": {"pool": str(pool), "data_dir": str(data_dir), "eval_sets": ["vicuna"],
                     "eval_limit": 2},
            "train": {"epochs": 1, "batch_size": 4, "max_length": 48, "learning_rate": 1e-3},
            "generate": {"max_new_tokens": 4, "batch_size": 4}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": ["base.yaml"], "ratios": [0.25],
        "selectors": [{"name": "random", "seeds": [0, 1]},
                      # a published Alpaca subset on a non-Alpaca pool: this cell must fail
                      {"name": "published:dq-k5-1k"}]}))
    return grid


def test_run_grid_order_keeps_going_and_exit_code(tmp_path, monkeypatch, capsys):
    """Fast (no model): a fake Pipeline records the order; one cell raises."""
    from selbench import cli
    from selbench.benchmark import pipeline as pl

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"experiment": "x", "runs_dir": str(tmp_path / "runs")}))
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"base": ["base.yaml"], "regimes": ["lora", "full"],
                                    "selectors": [{"name": "random", "seeds": [0, 1]}, "ifd"],
                                    "ratios": [0.1]}))
    order = []

    class FakePipeline:
        def __init__(self, cfg, progress=True, log=print):
            self.cfg = cfg

        def load_data(self):
            pass

        def train(self, name, idx):
            order.append(("full", self.cfg.train.method))
            return "k"

        def generate(self, key):
            return key

        def run(self, command=None):
            order.append((self.cfg.selector, self.cfg.seed, self.cfg.train.method))
            if self.cfg.selector == "ifd" and self.cfg.train.method == "full":
                raise RuntimeError("boom")
            return [{"judge": "j", "summary": {"pooled": {"pws": 1.1}}}]

    monkeypatch.setattr("selbench.benchmark.grid.Pipeline", FakePipeline)
    monkeypatch.setattr("selbench.cli.plan_grid",
                        lambda g: {"cells": [], "stages": 0, "to_run": 0, "by_stage": {},
                                   "seconds": None, "judge_cost": (None, None), "problems": {}})
    monkeypatch.setattr("selbench.cli.write_leaderboard", lambda d: (d / "a", d / "b"))
    rc = cli.main(["grid", str(grid), "--quiet"])
    assert rc == 1
    # the two full-data baselines first, then every cell, the failed one included
    assert order[:2] == [("full", "lora"), ("full", "full")]
    assert order[2:] == [("random", 0, "lora"), ("random", 1, "lora"), ("ifd", 0, "lora"),
                         ("random", 0, "full"), ("random", 1, "full"), ("ifd", 0, "full")]
    out = capsys.readouterr().out
    assert "7 ok, 1 failed" in out and "RuntimeError: boom" in out  # 2 baselines + 5 cells
    st = json.loads((tmp_path / "runs" / "x" / "grid" / "g.json").read_text())
    assert st["cells"]["full | random | r=0.1 | seed 1"]["state"] == "ok"
    # --reverse: the second process of a two-process grid; baselines first, cells last to
    # first, its own status file (the forward one's is left alone)
    order.clear()
    before = (tmp_path / "runs" / "x" / "grid" / "g.json").read_text()
    assert cli.main(["grid", str(grid), "--quiet", "--reverse"]) == 1
    assert order[:2] == [("full", "lora"), ("full", "full")]
    assert order[2:] == [("ifd", 0, "full"), ("random", 1, "full"), ("random", 0, "full"),
                         ("ifd", 0, "lora"), ("random", 1, "lora"), ("random", 0, "lora")]
    assert (tmp_path / "runs" / "x" / "grid" / "g-reverse.json").exists()
    assert (tmp_path / "runs" / "x" / "grid" / "g.json").read_text() == before


@pytest.mark.slow
def test_grid_runs_shares_the_baseline_keeps_going_and_resumes(tmp_path, tiny_model_dir, data_dir,
                                                               tiny_pool_rows, monkeypatch):
    from selbench import cli
    from selbench.benchmark import train as tr

    grid = _tiny_grid(tmp_path, tiny_model_dir, data_dir, tiny_pool_rows)
    calls = []
    real = tr.train_model
    monkeypatch.setattr("selbench.benchmark.pipeline.train_model", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    g = load_grid(grid)
    assert len(g.cells) == 3
    text = render_grid_plan(g, plan_grid(g))
    assert "3 cells" in text and "0 done, 3 to run" in text and "planned MDE" in text
    logs = []
    status = run_grid(g, progress=False, log=logs.append)
    # one full-data model (24 rows) for every cell; one subset model per seed
    assert calls.count(24) == 1 and calls.count(6) == 2, calls
    states = {k: v["state"] for k, v in status["cells"].items()}
    assert states["default | full-data baseline"] == "ok"
    assert states["default | random | r=0.25 | seed 0"] == "ok"
    assert states["default | random | r=0.25 | seed 1"] == "ok"
    assert states["default | published:dq-k5-1k | r=0.25 | seed 0"] == "failed"
    assert "subset of the 'alpaca' pool" in status["cells"]["default | published:dq-k5-1k | r=0.25 | seed 0"]["error"]
    summary = render_summary(status)
    assert "3 ok, 1 failed" in summary and "FAILED" in summary  # baseline + 2 cells
    saved = json.loads(g.status_path.read_text())
    assert saved["cells"]["default | published:dq-k5-1k | r=0.25 | seed 0"]["state"] == "failed"
    # the leaderboard sees both seeds of the random cell, and the reference-NLL column
    from selbench.leaderboard.study import collect_study

    df = collect_study(tmp_path / "runs")
    pooled = df[df.eval_set == "pooled"]
    assert sorted(pooled.seed) == [0, 1] and pooled.refnll.notna().all()
    # rerun (CLI): nothing finished is recomputed; the failed cell fails again -> exit 1
    n = len(calls)
    rc = cli.main(["grid", str(grid), "--quiet"])
    assert rc == 1 and len(calls) == n
    g2 = load_grid(grid)
    assert "2 done" in render_grid_plan(g2, plan_grid(g2))


@pytest.mark.parametrize("path", GRIDS, ids=[p.name if p.parent.name != "mini" else "mini/grid.yaml"
                                             for p in GRIDS])
def test_every_shipped_grid_plans(path, data_dir, tmp_path):
    """Every shipped grid plans (stages, hours, MDE) without running; the CPU grids plan
    with no problem at all on the shared data."""
    g = load_grid(path, [f"runs_dir={tmp_path}", f"data.data_dir={data_dir}"])
    p = plan_grid(g)
    text = render_grid_plan(g, p)
    assert f"{len(g.cells)} cells" in text and "MDE" in text
    if path.name in ("grid-smoke.yaml", "grid.yaml"):
        assert not p["problems"], p["problems"]
        assert p["to_run"] == p["stages"] > 0
