"""Issue 21, the friction a new user met: each item, tried as that user would."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import REPO

from selbench import cli

PLUGIN = '''from dataclasses import dataclass

import numpy as np

from selbench.selectors import SELECTORS, Selector, SelectorConfig


@dataclass
class EditedConfig(SelectorConfig):
    pass


@SELECTORS.register("edited-plugin")
class Edited(Selector):
    config_cls = EditedConfig
    description = "a plugin the user edits"

    def score(self, pool, ctx):
        return np.array([{sign}len(r["output"]) for r in pool.rows], dtype=float)
'''


def _bench(*argv, data_dir=None, cwd=None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if data_dir:
        env["SELBENCH_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "selbench.cli", *map(str, argv)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_editing_a_plugin_selector_changes_its_selection_key(tmp_path, data_dir):
    """Score changed from longest to shortest: the plan must not say the old selection is done."""
    plugin = tmp_path / "edited.py"
    plugin.write_text(PLUGIN.format(sign=""))
    args = ["plan", "--selector", "edited-plugin", "--runs-dir", tmp_path / "runs",
            "--plugin", plugin]  # --plugin after the command works too
    first = _bench(*args, data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    key1 = re.search(r"select/(edited-plugin-\S+)", first.stdout).group(1)
    plugin.write_text(PLUGIN.format(sign="-"))
    second = _bench(*args, data_dir=data_dir)
    key2 = re.search(r"select/(edited-plugin-\S+)", second.stdout).group(1)
    assert key1 != key2


def test_a_built_in_selectors_code_is_part_of_its_key(monkeypatch):
    from selbench.selectors import build_selector
    from selbench.selectors import codeid

    sel = build_selector("random")
    before = sel.cache_config()["code"]
    codeid._module_hashes.cache_clear()
    real = codeid._source_file

    class Edited:
        def __init__(self, p):
            self.p = p

        def is_file(self):
            return True

        def read_bytes(self):
            return self.p.read_bytes() + b"\n# edited\n"

        @property
        def name(self):
            return self.p.name

        def read_text(self, encoding=None):
            return self.p.read_text()

    monkeypatch.setattr(codeid, "_source_file",
                        lambda m: Edited(real(m)) if m == "selbench.selectors.random" else real(m))
    assert build_selector("random").cache_config()["code"] != before
    codeid._module_hashes.cache_clear()


def test_every_run_flag_has_help_from_the_config_docs():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("run", "plan"):
        for action in sub.choices[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and len(action.help) > 10, (name, action.option_strings)
    run_help = sub.choices["run"].format_help()
    assert "peak learning rate" not in run_help  # only the named flags; --list-keys has all
    assert "Seeded random sample of the pool" in run_help  # --pool-size, from DataConfig's doc


def test_list_keys_prints_every_config_key_with_its_doc(capsys):
    assert cli.main(["run", "--list-keys"]) == 0
    out = capsys.readouterr().out
    assert "train.learning_rate (float, default 0.0002): peak learning rate (AdamW)" in out
    assert all(": " in line and not line.endswith(": ") for line in out.splitlines())


def test_plugin_flag_works_after_the_command(tmp_path, capsys):
    plugin = tmp_path / "p.py"
    plugin.write_text(PLUGIN.format(sign="").replace("edited-plugin", "after-plugin"))
    assert cli.main(["ls", "--plugin", str(plugin)]) == 0
    assert "after-plugin" in capsys.readouterr().out


def test_bench_ls_says_what_each_selector_needs(capsys):
    assert cli.main(["ls"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"gsnr\s+\[proxy\]", out) and re.search(r"random\s+\[-\]", out)
    assert re.search(r"ifd-diverse\s+\[proxy, embeddings\]", out)


def test_grid_takes_a_runs_dir(tmp_path, capsys, data_dir, monkeypatch):
    monkeypatch.setenv("SELBENCH_DATA_DIR", str(data_dir))
    rc = cli.main(["grid", str(REPO / "configs" / "grid-smoke.yaml"), "--dry-run", "--runs-dir",
                   str(tmp_path / "elsewhere")])
    assert rc == 0
    assert f"runs folder: {tmp_path / 'elsewhere'}" in capsys.readouterr().out


def test_external_judge_results_reach_the_leaderboard(tmp_path, data_dir, monkeypatch):
    from test_external_answers import DE, _StubJudge

    import selbench.judges.external as ext
    from selbench.leaderboard import collect

    monkeypatch.setattr(ext, "load_judge", lambda name: _StubJudge())
    a = data_dir / (DE + "vicuna_test__kc_gpt4_initRAND100__rd_10.jsonl")
    b = data_dir / (DE + "vicuna_test__rand_gpt4_initRAND100__rd_10.jsonl")
    ext.judge_files(a, b, "stub", tmp_path / "runs", str(data_dir), log=lambda m: None)
    df = collect(tmp_path / "runs")
    assert len(df) and set(df.experiment) == {"external"} and "pooled" in set(df.eval_set)
    assert (tmp_path / "runs" / "external" / "judge" / "stub").is_dir()


def test_every_table_keys_its_rows_by_the_setting():
    """Issue 21: random 5% in two settings (1.5517 and 1.4500 reference NLL) are two rows, each
    with its setting, in the NLL, cost, judge and length tables."""
    from selbench.leaderboard import report
    from selbench.leaderboard.data import StudyData

    rows = []
    for fp, nll in (("aaaaaa11", 1.5517), ("bbbbbb22", 1.4500)):
        for es in ("pooled", "vicuna"):
            rows.append({"selector": "random", "regime": "lora", "pool": "alpaca", "model": "m",
                         "ratio": 0.05, "eval_set": es, "judge": "j", "judge_kind": "llm", "win": 1,
                         "tie": 1, "lose": 1, "unparsed": 0, "pws": 1.0, "seed": 0,
                         "experiment": f"e{fp[0]}", "model_a": f"a{fp}-g1", "model_b": f"full{fp}-g2",
                         "setting_fp": fp, "selector_fp": "r", "len_a": 10.0, "len_b": 20.0,
                         "longer_won": 0.5, "n_decided": 2, "selection_seconds": 0.1,
                         "n_selected": 10, "proxy_flops": None, "train_seconds": 5.0,
                         "train_steps": 10, "full_train_seconds": 50.0, "position_consistency": 1.0,
                         "selection_device": "cpu"})
    refnll = pd.DataFrame([{"experiment": f"e{fp[0]}", "train_key": f"a{fp}", "eval_set": "vicuna",
                            "id": "1", "nll_sum": nll * 10, "tokens": 10}
                           for fp, nll in (("aaaaaa11", 1.5517), ("bbbbbb22", 1.4500))])
    data = StudyData(results=pd.DataFrame(rows), refnll=refnll)
    nll = report.refnll_section(data)
    assert "1.552" in nll and "1.450" in nll and "aaaaaa" in nll and "bbbbbb" in nll
    for section in (report.cost_section(data), report.consistency_section(data),
                    report.length_section(data)):
        assert "aaaaaa" in section and "bbbbbb" in section


def test_did_you_mean_is_written_once():
    src = REPO / "src" / "selbench"
    users = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.py")
                   if "difflib" in p.read_text())
    assert users == ["registry.py"], users


def test_kappa_is_scikit_learns():
    from sklearn.metrics import cohen_kappa_score

    from selbench.leaderboard.stats import cohen_kappa

    a = ["win", "tie", "lose", "win", "win", "tie"]
    b = ["win", "lose", "lose", "tie", "win", "tie"]
    assert cohen_kappa(a, b, ["win", "tie", "lose"]) == cohen_kappa_score(a, b, labels=["win", "tie", "lose"])


def test_export_reads_what_the_select_stage_recorded():
    """The select stage records the pool it selected from (bench export reads that, not the
    manifest's newest invocation)."""
    from selbench.benchmark.stages import RunData
    from selbench.config import RunConfig
    from selbench.data import Pool

    data = RunData("alpaca", Pool("alpaca", [{"id": "x", "instruction": "i", "input": "", "output": "o"}],
                                  "/d/alpaca_data.json", {"duplicate": 3, "empty_output": 28}), {})
    rec = data.pool_record(RunConfig())
    assert rec["skipped"] == {"duplicate": 3, "empty_output": 28} and rec["data"]["pool"] == "alpaca"
    assert rec["fingerprint"] == data.pool.fingerprint() and json.dumps(rec)


def test_reference_max_length_is_in_the_reference_nll_key(data_dir, tmp_path):
    """A shorter reference cut scores fewer tokens: a different result, so a different key."""
    from selbench.benchmark.stages import Stages, load_run_data
    from selbench.config import build_config

    def key(**over):
        cfg = build_config([str(REPO / "configs" / "default.yaml")],
                           {"data.data_dir": str(data_dir), "runs_dir": str(tmp_path), **over})
        st = Stages(cfg, load_run_data(cfg), "cpu")
        return st.refnll_key(st.train_key("full", None)).key

    default = key()
    assert key(**{"data.reference_max_length": 1024}) == default  # the old default keeps old caches
    assert key(**{"data.reference_max_length": 384}) != default


def test_what_a_selection_reads_from_the_run_is_in_its_key(data_dir, tmp_path):
    """Issue 19 review: a selection that reads the target model's tokenizer, the run's eval
    prompts, a target file or the run's judge is recomputed when that changes; one that
    reads none of them keeps its key (and the key it had before this rule existed)."""
    from selbench.benchmark.stages import Stages, load_run_data
    from selbench.config import build_config
    from selbench.runs import stage_key
    from selbench.selectors import build_selector

    def key(name, params=None, **over):
        cfg = build_config([str(REPO / "configs" / "default.yaml")],
                           {"data.data_dir": str(data_dir), "runs_dir": str(tmp_path), **over})
        st = Stages(cfg, load_run_data(cfg), "cpu")
        return st.select_key(build_selector(name, params), 0.1).key, st

    other_model = {"model": "gemma3-270m"}
    # reads nothing from the run: same key under another model, and the old formula
    k, st = key("random")
    assert key("random", **other_model)[0] == k
    sel = build_selector("random")
    assert k == stage_key("select", "random-r0.1-s0", sel.cache_config(), 0.1, 0, st.data.pool_key).key
    # the target model's tokenizer
    assert key("length")[0] != key("length", **other_model)[0]
    assert key("length", {"tokenizer": "smollm2-135m-instruct"})[0] == \
        key("length", {"tokenizer": "smollm2-135m-instruct"}, **other_model)[0]
    assert key("longest", {"unit": "tokens"})[0] != key("longest", {"unit": "tokens"}, **other_model)[0]
    assert key("longest")[0] == key("longest", **other_model)[0]  # words: no tokenizer
    # the run's eval prompts (target: eval) and a target file's content
    assert key("dsir")[0] != key("dsir", **{"data.eval_limit": 3})[0]
    target = tmp_path / "target.jsonl"
    target.write_text('{"prompt": "write a poem"}\n')
    k1 = key("dsir", {"target": str(target)})[0]
    assert key("dsir", {"target": str(target)}, **{"data.eval_limit": 3})[0] == k1
    target.write_text('{"prompt": "fix this code"}\n')
    assert key("dsir", {"target": str(target)})[0] != k1
    assert key("embed-target")[0] != key("embed-target", **{"data.eval_limit": 3})[0]
    # the rating judge: the run's first judge when none is named
    a = key("alpagasus", judges=["hf-smollm2"])[0]
    assert a != key("alpagasus", judges=["vllm-local"])[0]
    assert key("alpagasus", {"judge": "hf-smollm2"}, judges=["vllm-local"])[0] == \
        key("alpagasus", {"judge": "hf-smollm2"}, judges=["offline-refsim-minilm"])[0]


def test_a_selection_records_its_own_flops_estimate(tiny_pool_rows):
    """Issue 19 review: cost.flops_est was always None; it is the selector's own estimate
    (the one `bench plan` shows) unless the selection measured its own."""
    import numpy as np

    from selbench.data import Pool
    from selbench.estimates import mean_tokens
    from selbench.selectors.base import SelectionContext, Selector

    seen = {}

    class Estimating(Selector):  # a test double: scores by position, estimates 6 x n x tokens
        registry_name = "estimating"

        def estimate(self, n, tokens, seed=0):
            seen["args"] = (n, tokens)
            return {"what": "test", "flops": 6.0 * n * tokens, "kind": "proxy"}

        def score(self, pool, ctx):
            return np.arange(len(pool), dtype=float)

    pool = Pool("p", [dict(r, id=str(i)) for i, r in enumerate(tiny_pool_rows)], "p.json")
    sel = Estimating().run(pool, 0.5, SelectionContext(log=lambda m: None))
    n, t = len(pool), mean_tokens(pool.rows, 4096)
    assert seen["args"] == (n, t) and sel.info["cost"]["flops_est"] == 6.0 * n * t
