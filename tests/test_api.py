"""The Python API and selector plugins (a file and an entry point)."""
import math
import subprocess
import sys
import textwrap

import numpy as np
from conftest import REPO

import selbench
from selbench.selectors import SELECTORS

PLUGIN = REPO / "tests" / "plugins" / "longest_output_selector.py"


def test_select_returns_subset_and_scores(tiny_pool_rows):
    sel = selbench.select("random", ratio=0.25, pool=tiny_pool_rows, seed=1)
    assert len(sel.indices) == math.ceil(0.25 * len(tiny_pool_rows))
    assert sel.scores.shape == (len(tiny_pool_rows),)
    from selbench.data import content_id

    r = tiny_pool_rows
    assert sel.info["ids"] == [content_id(r[i]["instruction"], r[i]["input"], r[i]["output"])
                               for i in sel.indices]
    again = selbench.select("random", ratio=0.25, pool=tiny_pool_rows, seed=1)
    assert again.indices == sel.indices


def test_select_with_a_proxy_selector_on_a_tiny_model(tiny_pool_rows, tiny_model_dir):
    sel = selbench.select("ifd", ratio=0.25, pool=tiny_pool_rows,
                          params={"max_length": 64, "batch_size": 8}, proxy={"model": tiny_model_dir})
    assert np.isfinite(sel.scores).sum() > 0 and len(sel.indices) >= 1


def test_plan_from_python(data_dir, tmp_path):
    text = selbench.plan_text(ratio=0.1, data_dir=str(data_dir), runs_dir=str(tmp_path))
    assert "train random r=0.1: 20 examples" in text and "no problems" in text


def test_plugin_file_registers_a_selector_that_passes_the_contract(tiny_pool_rows, tiny_model_dir, tmp_path):
    from selbench.plugins import load_plugin

    load_plugin(str(PLUGIN))
    assert "plugin-longest" in SELECTORS
    from test_selector_contract import test_selector_contract

    from selbench.data import Pool

    test_selector_contract("plugin-longest", Pool("tiny", tiny_pool_rows, "t"), tiny_model_dir, tmp_path)
    sel = selbench.select("plugin-longest", ratio=0.1, pool=tiny_pool_rows)
    lens = [len(r["output"]) for r in tiny_pool_rows]
    assert lens[sel.indices[0]] == max(lens)


def test_plugin_flag_on_the_cli():
    out = subprocess.run([sys.executable, "-m", "selbench.cli", "--plugin", str(PLUGIN), "ls"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "plugin-longest" in out.stdout


def test_entry_point_plugins_load_with_the_selectors(tmp_path):
    site = tmp_path / "site"
    (site / "ep_plugin_demo-0.1.dist-info").mkdir(parents=True)
    (site / "ep_plugin_demo-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ep-plugin-demo\nVersion: 0.1\n")
    (site / "ep_plugin_demo-0.1.dist-info" / "entry_points.txt").write_text(
        "[selbench.selectors]\nep-demo = ep_plugin_demo_mod\n")
    (site / "ep_plugin_demo_mod.py").write_text(textwrap.dedent('''
        import numpy as np
        from selbench.selectors import SELECTORS, Selector

        @SELECTORS.register("ep-demo")
        class EPDemo(Selector):
            description = "entry-point plugin"
            def score(self, pool, ctx):
                return np.arange(len(pool), dtype=float)
    '''))
    code = ("import sys; sys.path.insert(0, %r); from selbench.selectors import SELECTORS; "
            "print('ep-demo' in SELECTORS)" % str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "True", out.stderr[-1500:]
