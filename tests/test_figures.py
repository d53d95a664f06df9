"""Study figures from a synthetic runs folder (stage files written by hand, no model)."""
import json
from pathlib import Path

import numpy as np
import pytest


def _outcomes(rng, p_win, n):
    return list(rng.choice(["win", "tie", "lose"], n, p=[p_win, 0.2, 0.8 - p_win]))


def make_study(root: Path, rows: list[dict], judges=("off",), kind="offline") -> Path:
    """runs/<e>/ with every stage file the study layer reads: generate answers, train loss,
    select subset/scores, refnll, judge results + judgments, manifest. Returns the runs dir."""
    from selbench.data import load_pool

    runs = root / "runs"
    exp = runs / "e"
    pool_file = root / "pool.json"
    pool_file.write_text(json.dumps(rows))
    pool = load_pool(str(pool_file))
    (exp).mkdir(parents=True)
    (exp / "manifest.json").write_text(json.dumps({"invocations": [{
        "command": ["bench", "grid", "g.yaml"], "versions": {"selbench": "0.test"},
        "device": {"cpus": 2, "cuda": False},
        "config": {"device": "auto", "data": {"pool": str(pool_file), "data_dir": None,
                                              "pool_size": None, "sample_seed": 0}}}]}))
    sets = {"wizardlm": [str(i) for i in range(6)], "vicuna": [str(i) for i in range(4)]}
    rng = np.random.default_rng(0)

    def model(tkey, n_words):
        g = exp / "generate" / f"{tkey}-g0000000"
        g.mkdir(parents=True)
        for es, ids in sets.items():
            with (g / f"{es}.jsonl").open("w") as f:
                for i in ids:
                    f.write(json.dumps({"id": i, "prompt": f"q{i}", "answer": "w " * (n_words + int(i))}) + "\n")
        (g / "DONE").write_text("")
        t = exp / "train" / tkey
        t.mkdir(parents=True)
        (t / "loss.csv").write_text("step,loss,learning_rate\n" + "".join(
            f"{s},{2.5 - 0.1 * s + 0.01 * n_words},0.0002\n" for s in range(1, 6)))
        (t / "train.json").write_text(json.dumps({"seconds": 3.0 * n_words, "steps": 5, "examples": n_words}))
        (t / "DONE").write_text("")
        r = exp / "refnll" / f"{tkey}-r0000000"
        r.mkdir(parents=True)
        per = [{"eval_set": es, "id": i, "nll_sum": (1.0 + n_words / 100 + 0.01 * int(i)) * 20,
                "tokens": 20} for es, ids in sets.items() for i in ids]
        per += [{"eval_set": "koala", "id": "k1", "nll_sum": 40.0, "tokens": 20}]
        (r / "per_prompt.jsonl").write_text("".join(json.dumps(x) + "\n" for x in per))
        (r / "result.json").write_text(json.dumps({"summary": {
            "pooled": {"nll": 1.0 + n_words / 100}, "wizardlm": {"nll": 1.1}, "vicuna": {"nll": 0.9}}}))
        (r / "DONE").write_text("")
        return f"{tkey}-g0000000"

    full = model("full-f0000000", 30)
    cells = [("random", 0.05, 0, 0.4), ("random", 0.05, 1, 0.35), ("random", 0.1, 0, 0.4),
             ("random", 0.1, 1, 0.3), ("ifd", 0.05, 0, 0.3), ("ifd", 0.1, 0, 0.45),
             ("gsnr", 0.05, 0, 0.5), ("gsnr", 0.1, 0, 0.55), ("gsnr-drop", 0.05, 0, 0.45)]
    for sel, ratio, seed, p_win in cells:
        skey = f"{sel}-r{ratio:g}-s{seed}-s0000000"
        s = exp / "select" / skey
        s.mkdir(parents=True)
        k = max(1, int(ratio * len(pool) * 4))
        idx = list(rng.choice(len(pool), k, replace=False))
        (s / "subset.json").write_text(json.dumps({"indices": [int(i) for i in idx],
                                                   "ids": [pool.rows[i]["id"] for i in idx]}))
        np.save(s / "scores.npy", rng.normal(size=len(pool)))
        shared = [{"key": "profiles/smollm2-aaaa", "what": "gradient profile", "seconds": 290.0,
                   "built_here": False, "flops": 1e12}] if sel.startswith("gsnr") else []
        (s / "info.json").write_text(json.dumps({
            "selector": sel, "selection_seconds": {"random": 0.01, "ifd": 40.0}.get(sel, 300.0),
            "cost": {"own_seconds": 0.01 if sel == "random" else 10.0, "shared": shared,
                     "device": "cpu"},
            "pool": {"data": {"pool": str(pool_file), "data_dir": None, "pool_size": None,
                              "sample_seed": 0, "columns": {}},
                     "fingerprint": pool.fingerprint(), "n": len(pool), "skipped": {}}}))
        (s / "config.yaml").write_text(f"selector: {sel}\n" + (
            "profile: {proxy: smollm2-135m-instruct, members: 5, epochs: 2, record: train, max_length: 128}\n"
            if sel.startswith("gsnr") else "proxy: smollm2-135m-instruct\nmax_length: 128\n" if sel == "ifd" else ""))
        gkey = model(f"{skey}-t0000000", 10 + 5 * seed + int(100 * ratio))
        for j in judges:
            jd = exp / "judge" / j / f"{gkey}__vs__{full}-j0000000"
            jd.mkdir(parents=True)
            jrows, summ = [], {}
            for es, ids in sets.items():
                outs = _outcomes(rng, p_win, len(ids))
                jrows += [{"eval_set": es, "id": i, "outcome": o} for i, o in zip(ids, outs)]
            for es in [*sets, "pooled"]:
                outs = [r["outcome"] for r in jrows if es == "pooled" or r["eval_set"] == es]
                w, t, l = (outs.count(x) for x in ("win", "tie", "lose"))
                summ[es] = {"win": w, "tie": t, "lose": l, "unparsed": 0, "n": len(outs),
                            "pws": 1 + (w - l) / len(outs), "pws_compat": 1 + (w - l) / len(outs),
                            "ci95": [0.6, 1.4], "position_consistency": 0.9}
            with (jd / "judgments.jsonl").open("w") as f:
                for r in jrows:
                    f.write(json.dumps(r) + "\n")
            (jd / "result.json").write_text(json.dumps({
                "selector": sel, "regime": "lora", "pool": "tinypool", "model": "m", "ratio": ratio,
                "judge": j, "judge_kind": kind, "n_selected": k, "pool_size": len(pool),
                "selection_seconds": {"random": 0.01, "ifd": 40.0}.get(sel, 300.0), "seed": seed,
                "experiment": "e", "model_a": gkey, "model_b": full, "select_key": skey,
                "setting_fp": "set00001", "selector_fp": f"fp-{sel}", "setting_desc": "tiny setting",
                "setting": {"pool": {"fingerprint": pool.fingerprint()}},
                "usage": {}, "cost_usd": None, "summary": summ}))
            (jd / "DONE").write_text("")
        (s / "DONE").write_text("")
    return runs


@pytest.fixture
def study(tmp_path, tiny_pool_rows):
    return make_study(tmp_path, tiny_pool_rows)


def test_every_figure_is_written_with_its_csv(study, tmp_path):
    import pandas as pd

    from selbench.leaderboard.data import StudyData
    from selbench.leaderboard.figures import make_figures

    data = StudyData.from_runs(study)
    df = data.results
    assert df.refnll.notna().all() and df.len_a.notna().all() and df.proxy_flops.notna().any()
    out = tmp_path / "figures"
    figs = make_figures(data, out, ratio=0.05)
    names = {p.stem for ps in figs.values() for p in ps}
    assert names == {"fig3_loss_lora", "pws_vs_ratio", "cost_vs_pws", "overlap_jaccard",
                     "score_dist", "selected_lengths"}
    for n in names:
        assert (out / f"{n}.png").stat().st_size > 5000 and (out / f"{n}.csv").exists()
    assert not list(study.rglob("*.png"))  # nothing written into the stage cache
    loss = pd.read_csv(out / "fig3_loss_lora.csv")
    # every curve says what it was trained on (they are on different data)
    assert any(m.startswith("full data (100%): 30 examples") for m in set(loss.model))
    assert any(m.startswith("random (seed 1)") for m in set(loss.model))
    pws = pd.read_csv(out / "pws_vs_ratio.csv")
    r = pws[(pws.selector == "random") & (pws.ratio == 0.05)].iloc[0]
    assert r.n_seeds == 2  # the two seeds of random are one point
    # one kind of CI, inside PWS's range, even for 2 seeds (no t interval over 2 seeds)
    assert (pws.ci_lo >= 0).all() and (pws.ci_hi <= 2).all() and (pws.ci_lo <= pws.pws).all()
    jac = pd.read_csv(out / "overlap_jaccard.csv")
    diag = jac[jac.a == jac.b]
    assert (diag.jaccard == 1.0).all()
    one = jac[(jac.a == "random (seed 0)") & (jac.b == "ifd (seed 0)")].iloc[0]
    assert one.jaccard == pytest.approx(one.intersection / (one.size_a + one.size_b - one.intersection))
    lengths = pd.read_csv(out / "selected_lengths.csv")
    pool_row = lengths[lengths.group == "pool"].iloc[0]
    assert pool_row.n == 24
    cost = pd.read_csv(out / "cost_vs_pws.csv")
    assert (cost[cost.selector == "random"].selection_seconds > 0).all()  # not clamped


def test_study_data_round_trips_and_rerenders_without_the_runs(study, tmp_path):
    import shutil

    from selbench.leaderboard.data import StudyData
    from selbench.leaderboard.publish import publish, rerender

    out = tmp_path / "pub"
    publish(study, out, title="T")
    first = (out / "README.md").read_text()
    shutil.rmtree(study)  # the runs folder is gone: the study re-renders from its data/
    back = StudyData.load(out / "data")
    assert len(back.results) and len(back.prompts) and len(back.refnll) and len(back.subsets)
    rerender(out)
    assert (out / "README.md").read_text() == first


def test_damaged_stage_files_are_skipped_and_named(study, tmp_path):
    """Issue 22: a damaged loss.csv, subset.json, scores.npy or a list-shaped result.json
    never aborts a publish; what was skipped is named."""
    from selbench import cli

    sel = sorted((study / "e" / "select").iterdir())
    (sel[0] / "scores.npy").write_bytes(b"not a numpy file")
    (sel[1] / "subset.json").write_text("{")
    tr = sorted((study / "e" / "train").iterdir())
    (tr[0] / "loss.csv").write_text("garbage\x00\x01")
    res = sorted((study / "e" / "judge" / "off").glob("*/result.json"))
    res[0].write_text("[1, 2, 3]")
    out = tmp_path / "pub"
    assert cli.main(["leaderboard", "--runs-dir", str(study), "--publish", str(out)]) == 0
    md = (out / "README.md").read_text()
    skipped = md.split("## Skipped")[1].split("## ")[0]
    assert "scores" in skipped and "subset" in skipped and "loss curve" in skipped
    assert "result" in skipped and "expected a JSON object, got a list" in skipped
