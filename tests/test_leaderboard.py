"""Leaderboard: a Table 1 cell is one comparison; LLM judges only in its mean."""
import json

import pytest

from selbench.leaderboard import collect, render


def _result(root, exp, judge, counts, kind="llm", setting="s1", seed=0, selector_fp="f1",
            selector="gsnr", ratio=0.05, unparsed=1, note=None):
    w, t, l = counts
    s = {"win": w, "tie": t, "lose": l, "unparsed": unparsed, "n": w + t + l + unparsed,
         "pws": 1 + (w - l) / (w + t + l), "pws_compat": 1 + (w - l) / (w + t + l + unparsed),
         "ci95": [0.5, 1.5], "position_consistency": 0.8}
    folder = root / exp / "judge" / judge / f"{selector}-{seed}-{setting}-{ratio}"
    folder.mkdir(parents=True)
    (folder / "DONE").write_text("")
    (folder / "result.json").write_text(json.dumps({
        "selector": selector, "regime": "lora", "pool": "alpaca", "model": "m", "ratio": ratio,
        "judge": judge, "judge_kind": kind, "n_selected": 10, "pool_size": 200,
        "selection_seconds": 12.5, "seed": seed, "experiment": exp, "model_a": "a",
        "model_b": "b", "setting_fp": setting, "selector_fp": selector_fp,
        "setting_desc": f"experiment {exp}", "pool_note": note,
        "usage": {"prompt_tokens": 10, "completion_tokens": 2}, "cost_usd": None,
        "summary": {"pooled": s, "vicuna": s}}))


def _row(table: str, start: str) -> list[str]:
    return [c.strip() for c in [l for l in table.splitlines() if l.startswith(f"| {start}")][0].split("|")[1:-1]]


def test_llm_judges_are_averaged_and_offline_judges_get_their_own_table(tmp_path):
    _result(tmp_path, "e", "j1", (6, 2, 2))  # PWS 1.4
    _result(tmp_path, "e", "j3", (4, 2, 4))  # PWS 1.0
    _result(tmp_path, "e", "off", (2, 2, 6), "offline")  # PWS 0.6: must not enter the mean
    (tmp_path / "e" / "judge" / "j4" / "unfinished").mkdir(parents=True)  # no DONE: ignored
    df = collect(tmp_path)
    assert len(df) == 6 and set(df.judge) == {"j1", "j3", "off"}
    md = render(df)
    table1 = md.split("## Judge-free")[0]
    assert "Alpaca / m / 5%" in table1 and "LLM judges: j1, j3" in table1
    assert _row(table1, "G-SNR")[1] == "1.200"  # (1.4 + 1.0) / 2, offline 0.6 left out
    offline = md.split("## Judge-free")[1].split("## All results")[0]
    assert "off (offline, not an LLM)" in offline and _row(offline, "G-SNR")[1] == "0.600"
    assert "off (offline, not an LLM)" in md.split("## All results")[1] and "6/2/2" in md


def test_results_from_different_settings_are_never_averaged(tmp_path):
    # same selector/regime/pool/model/ratio, but e.g. another train config: two settings
    _result(tmp_path, "smoke", "j1", (6, 2, 2), setting="aaaaaa11")  # 1.4
    _result(tmp_path, "other", "j1", (2, 2, 6), setting="bbbbbb22")  # 0.6
    md = render(collect(tmp_path))
    table1 = md.split("## All results")[0]
    header = [l for l in table1.splitlines() if l.startswith("| selector")][0]
    assert "Alpaca / m / 5% [aaaaaa]" in header and "Alpaca / m / 5% [bbbbbb]" in header
    row = _row(table1, "G-SNR")
    assert "1.400" in row and "0.600" in row and "1.000" not in row
    assert "Setting [aaaaaa]: experiment smoke" in table1


def test_different_selector_configs_are_different_rows(tmp_path):
    _result(tmp_path, "e", "j1", (6, 2, 2), selector_fp="cfgA00")
    _result(tmp_path, "e2", "j1", (2, 2, 6), selector_fp="cfgB00")
    table1 = render(collect(tmp_path)).split("## All results")[0]
    assert _row(table1, "G-SNR [cfgA00]")[1] == "1.400"
    assert _row(table1, "G-SNR [cfgB00]")[1] == "0.600"


def test_several_seeds_give_mean_sd_and_n(tmp_path):
    _result(tmp_path, "e", "j1", (6, 2, 2), seed=0)  # 1.4
    _result(tmp_path, "e", "j1", (4, 2, 4), seed=1)  # 1.0
    table1 = render(collect(tmp_path)).split("## All results")[0]
    cell = _row(table1, "G-SNR")[1]
    sd = pytest.approx(0.2828, abs=1e-3)
    assert cell.startswith("1.200 ± ") and cell.endswith("(n=2)")
    assert float(cell.split("± ")[1].split(" ")[0]) == sd


def test_both_pws_variants_and_pool_notes_are_shown(tmp_path):
    _result(tmp_path, "e", "j1", (6, 2, 2), unparsed=2, note="PARTIAL pool")
    md = render(collect(tmp_path))
    assert "PWS-compat" in md and "1.333" in md  # 1 + 4 / 12
    assert "**Pool note:** PARTIAL pool" in md


def test_old_results_without_fingerprints_are_not_pooled_across_experiments(tmp_path):
    for exp, counts in (("x", (6, 2, 2)), ("y", (2, 2, 6))):
        _result(tmp_path, exp, "j1", counts)
        res = next((tmp_path / exp).rglob("result.json"))
        d = json.loads(res.read_text())
        del d["setting_fp"], d["selector_fp"]
        res.write_text(json.dumps(d))
    row = _row(render(collect(tmp_path)).split("## All results")[0], "G-SNR")
    assert "1.400" in row and "0.600" in row


def test_numbers_are_formatted_once_and_not_reparsed(tmp_path):
    """tabulate re-parses numeric strings by default ("1.000" -> "1", "0.80" -> "0.8"); every
    markdown table keeps the digits we formatted."""
    _result(tmp_path, "e", "j3", (4, 2, 4))  # PWS exactly 1
    md = render(collect(tmp_path))
    table1 = md.split("## All results")[0]
    assert _row(table1, "G-SNR")[1] == "1.000"
    row = _row(md.split("## All results")[1], "gsnr")
    assert "1.000" in row and "0.80" in row and "[0.50, 1.50]" in row and "5%" in row
    assert "0.8" not in row and "1.0" not in row


def test_training_warnings_are_shown_next_to_the_tables(tmp_path):
    _result(tmp_path, "e", "j1", (6, 2, 2))
    _result(tmp_path, "e", "j2", (6, 2, 2), selector="ifd")
    res = next((tmp_path / "e" / "judge" / "j2").glob("*/result.json"))
    data = json.loads(res.read_text())
    data["warnings"] = ["subset model: 1 effective update (learning rate 0 at every other step)"]
    res.write_text(json.dumps(data))
    md = render(collect(tmp_path))
    section = md.split("## Warnings")[1].split("## All results")[0]
    assert "**ifd** lora alpaca / m / 5%, seed 0, judge j2, setting [s1]: subset model: 1 effective update" in section
    assert "gsnr" not in section


def _table(md: str, title: str) -> str:
    return md.split(title)[1].split("## ")[0]


def test_a_cell_missing_one_of_its_judges_is_marked_never_averaged(tmp_path):
    """Issue 17.4, reproduced: both paper judges on gsnr (1.1 and 1.12 -> 1.110) and on the
    ablation's one seed, but the second judge failed for the ablation: its cell must not show
    one judge's 1.100 beside two-judge means, and Table 2 computes no delta from it."""
    from selbench.leaderboard.render import table1_paper, table2_paper

    _result(tmp_path, "e", "j1", (3, 5, 2), selector="gsnr")        # 1.1
    _result(tmp_path, "e", "j2", (3, 6, 1), selector="gsnr")        # 1.2 -> gsnr 1.15
    _result(tmp_path, "e", "j1", (3, 5, 2), selector="gsnr-drop")   # 1.1, j2 missing
    df = collect(tmp_path)
    t1 = table1_paper(df)
    assert _row(t1, "G-SNR ")[1] == "1.150"
    assert _row(t1, "gsnr-drop")[1] == "1.100 \u2020"  # marked, not a plain 1.100
    assert "only j1 of the judges j1, j2" in t1 and "never averaged" in t1
    t2 = table2_paper(df)
    assert "n/a" in t2 and "-0.050" not in t2 and "-0.100" not in t2
    # with both judges present the delta is there and exact
    _result(tmp_path, "e", "j2", (3, 6, 1), selector="gsnr-drop")   # 1.2 -> 1.15
    t2 = table2_paper(collect(tmp_path))
    assert "+0.000" in t2 and "n/a" not in t2


def test_a_seed_without_a_judge_leaves_the_cell_on_its_complete_seeds(tmp_path):
    from selbench.leaderboard.render import table1_paper

    _result(tmp_path, "e", "j1", (6, 2, 2), seed=0)  # 1.4
    _result(tmp_path, "e", "j2", (6, 2, 2), seed=0)  # 1.4
    _result(tmp_path, "e", "j1", (2, 2, 6), seed=1)  # 0.6, j2 missing for seed 1
    t1 = table1_paper(collect(tmp_path))
    cell = _row(t1, "G-SNR")[1]
    assert cell.startswith("1.400") and cell.endswith("\u2021")  # seed 0 only, marked
    assert "some seeds of this cell lack one of the judges" in t1


def test_tables_are_laid_out_as_the_paper(tmp_path):
    """Issue 17.6: column groups Alpaca/7B, Alpaca/13B, Alpaca-GPT4/7B, Alpaca-GPT4/13B (models
    by size, not by name), ratios then 100%; a LoRA block then a Full block, rows in report
    order under the paper's names, with the selector ids in a note."""
    from selbench.leaderboard.render import table1_paper

    def res(pool, model, regime, selector, ratio):
        folder = tmp_path / "e" / "judge" / "j1" / f"{pool}-{model.split('/')[-1]}-{regime}-{selector}-{ratio}"
        folder.mkdir(parents=True)
        (folder / "DONE").write_text("")
        s = {"win": 3, "tie": 4, "lose": 3, "unparsed": 0, "n": 10, "pws": 1.0, "pws_compat": 1.0,
             "ci95": [0.5, 1.5], "position_consistency": 0.8}
        (folder / "result.json").write_text(json.dumps({
            "selector": selector, "regime": regime, "pool": pool, "model": model, "ratio": ratio,
            "judge": "j1", "judge_kind": "llm", "seed": 0, "experiment": "e", "model_a": folder.name,
            "model_b": "b", "setting_fp": f"{pool}{model}{regime}", "selector_fp": selector,
            "summary": {"pooled": s}}))

    for pool in ("alpaca-gpt4", "alpaca"):
        for model in ("meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-7b-hf"):
            for regime in ("full", "lora"):
                for sel in ("gsnr", "random", "ifd"):
                    for ratio in (0.15, 0.05, 0.1):
                        res(pool, model, regime, sel, ratio)
    t1 = table1_paper(collect(tmp_path))
    header = [l for l in t1.splitlines() if l.startswith("| selector")][0]
    cols = [c.strip() for c in header.split("|")[2:-1]]
    groups = list(dict.fromkeys(c.rsplit(" / ", 1)[0] for c in cols))
    assert groups == ["Alpaca / 7B", "Alpaca / 13B", "Alpaca-GPT4 / 7B", "Alpaca-GPT4 / 13B"]
    assert [c.rsplit(" / ", 1)[1] for c in cols[:4]] == ["5%", "10%", "15%", "100%"]
    lines = [l.split("|")[1].strip() for l in t1.splitlines() if l.startswith("| ") and "---" not in l][1:]
    assert lines[:8] == ["**LoRA**", "Random", "Superfiltering", "G-SNR",
                         "**Full fine-tuning**", "Random", "Superfiltering", "G-SNR"]
    assert "G-SNR = `gsnr`" in t1 and "Superfiltering = `ifd`" in t1 and "Random = `random`" in t1
