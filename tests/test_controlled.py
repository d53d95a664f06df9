"""LC-PWS and style-PWS wherever PWS appears (issue 20.1/20.2): the leaderboard, the
per-eval-set tables, the study and its bootstrap. The numbers are checked against an
independent path: the judgments and answer files read directly and fitted with
lengthctl.controlled_pws on the raw answer texts."""
import json

import numpy as np
import pandas as pd
import pytest
from test_figures import make_study  # noqa: E402  (tests/ is on sys.path under pytest)

from selbench import cli
from selbench.leaderboard.controlled import COLUMNS
from selbench.leaderboard.data import StudyData
from selbench.leaderboard.lengthctl import controlled_pws


def _direct(runs) -> pd.DataFrame:
    """controlled_pws input built from the stage files themselves (answers as texts)."""
    exp = runs / "e"
    rows = []
    for res in (exp / "judge").glob("*/*/result.json"):
        r = json.loads(res.read_text())
        ans = {}
        for gen in (r["model_a"], r["model_b"]):
            ans[gen] = {(f.stem, json.loads(x)["id"]): json.loads(x)["answer"]
                        for f in (exp / "generate" / gen).glob("*.jsonl")
                        for x in f.read_text().splitlines()}
        for x in (res.parent / "judgments.jsonl").read_text().splitlines():
            j = json.loads(x)
            rows.append({"judge": r["judge"], "comparison": str(res.parent.relative_to(runs)),
                         "eval_set": j["eval_set"], "id": j["id"], "outcome": j["outcome"],
                         "answer_a": ans[r["model_a"]][(j["eval_set"], j["id"])],
                         "answer_b": ans[r["model_b"]][(j["eval_set"], j["id"])]})
    return pd.DataFrame(rows)


@pytest.fixture
def study(tmp_path, tiny_pool_rows):
    return make_study(tmp_path, tiny_pool_rows)


def test_study_results_carry_lc_and_style_pws_equal_to_a_direct_fit(study):
    data = StudyData.from_runs(study)
    r = data.results
    assert all(c in r for c in COLUMNS) and r.lc_pws.notna().all() and r.sc_pws.notna().all()
    table, judges = controlled_pws(_direct(study), n_boot=1000, seed=0)
    t = table.set_index(["comparison", "eval_set"])
    for x in r.itertuples():
        d = t.loc[(x.result_dir, x.eval_set)]
        assert x.lc_pws == pytest.approx(d.lc_pws, abs=1e-9)
        assert x.sc_pws == pytest.approx(d.sc_pws, abs=1e-9)
        assert (x.lc_lo, x.lc_hi) == pytest.approx((d.lc_lo, d.lc_hi), abs=1e-9)
        # the plain PWS of the fit's table is the judge stage's own PWS
        assert d.pws == pytest.approx(x.pws, abs=1e-12)
        assert x.boot_pws_lo <= x.pws <= x.boot_pws_hi
    assert data.judge_style.lc_length_coef.iloc[0] == pytest.approx(judges.lc_length_coef.iloc[0])
    # make_study's answers differ in length only: every markdown covariate has no variation
    assert np.isnan(data.judge_style.sc_header_coef.iloc[0])


def test_leaderboard_tables_show_lc_next_to_pws(study, capsys):
    assert cli.main(["leaderboard", "--runs-dir", str(study)]) == 0
    md = (study / "leaderboard.md").read_text()
    assert "off (offline, not an LLM): length-controlled PWS" in md
    assert "off (offline, not an LLM): style-controlled PWS" in md
    assert "LC-PWS [95% CI]" in md and "style-PWS [95% CI]" in md
    csv = pd.read_csv(study / "leaderboard.csv")
    assert csv.lc_pws.notna().all() and csv.sc_hi.notna().all()
    # the LC table's G-SNR 10% cell is that cell's pooled LC-PWS (one seed, one judge)
    g = csv[(csv.selector == "gsnr") & (csv.ratio == 0.1) & (csv.eval_set == "pooled")]
    block = md.split("length-controlled PWS")[1].split("**off")[0]
    row = next(l for l in block.splitlines() if l.startswith("| G-SNR"))
    assert f"{g.lc_pws.iloc[0]:.3f}" in row


def test_a_result_without_judgments_is_blank_and_its_cell_marked(study):
    """An external result that shipped only its summary has no prompts to fit: its LC is
    blank, and a cell where one of two judges lacks LC is marked, never averaged."""
    import shutil

    exp = study / "e" / "judge"
    src = next((exp / "off").glob("gsnr-r0.1-*"))
    dst = exp / "off2" / src.name
    shutil.copytree(src, dst)
    res = json.loads((dst / "result.json").read_text())
    res.update(judge="off2", judge_kind="llm")
    (dst / "result.json").write_text(json.dumps(res))
    (dst / "judgments.jsonl").unlink()
    src_res = json.loads((src / "result.json").read_text())
    src_res["judge_kind"] = "llm"
    (src / "result.json").write_text(json.dumps(src_res))
    from selbench.leaderboard.render import render, with_controlled
    from selbench.leaderboard.study import collect_study

    df = with_controlled(study, collect_study(study))
    assert df[df.judge == "off2"].lc_pws.isna().all()
    md = render(df)
    lc = md.split("Table 1, length-controlled PWS")[1].split("## ")[0]
    row = next(l for l in lc.splitlines() if l.startswith("| G-SNR"))
    assert "†" in row  # one judge of two: marked
    assert "only off of the judges off, off2" in lc


def test_publish_has_the_section_and_rerender_of_an_old_study_fits_it(study, tmp_path):
    out = tmp_path / "pub"
    assert cli.main(["leaderboard", "--runs-dir", str(study), "--publish", str(out)]) == 0
    md = (out / "README.md").read_text()
    sec = md.split("## Length- and style-controlled PWS")[1].split("\n## ")[0]
    assert "LC-PWS [CI]" in sec and "LC length slope" in sec
    assert "fitted length slope" in md.split("## Summary")[1].split("\n## ")[0]
    assert (out / "data" / "judge_style.csv").exists()
    # a study published before these columns: no lc columns, old style column names
    data = tmp_path / "old"
    shutil_copy(out / "data", data)
    res = pd.read_csv(data / "results.csv").drop(columns=list(COLUMNS))
    res.to_csv(data / "results.csv", index=False)
    p = pd.read_csv(data / "prompts.csv").rename(columns={"len_a": "words_a", "len_b": "words_b",
                                                          "header_a": "headers_a", "header_b": "headers_b",
                                                          "list_a": "list_items_a", "list_b": "list_items_b"})
    p.to_csv(data / "prompts.csv", index=False)
    (data / "judge_style.csv").unlink()
    again = StudyData.load(data)
    fresh = StudyData.load(out / "data")
    assert again.results.lc_pws.to_numpy() == pytest.approx(fresh.results.lc_pws.to_numpy(), abs=1e-9)


def shutil_copy(a, b):
    import shutil

    shutil.copytree(a, b)
