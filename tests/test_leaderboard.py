import json

from selbench.leaderboard import collect, render


def _result(folder, judge, pws_counts, kind="llm"):
    w, t, l = pws_counts
    s = {"win": w, "tie": t, "lose": l, "unparsed": 1, "n": w + t + l + 1,
         "pws": 1 + (w - l) / (w + t + l), "ci95": [0.5, 1.5], "position_consistency": 0.8}
    folder.mkdir(parents=True)
    (folder / "DONE").write_text("")
    (folder / "result.json").write_text(json.dumps({
        "selector": "gsnr", "regime": "lora", "pool": "alpaca", "model": "m", "ratio": 0.05,
        "judge": judge, "judge_kind": kind, "n_selected": 10, "pool_size": 200,
        "selection_seconds": 12.5, "seed": 0, "experiment": "e", "model_a": "a", "model_b": "b",
        "usage": {"prompt_tokens": 10, "completion_tokens": 2}, "cost_usd": None,
        "summary": {"pooled": s, "vicuna": s}}))


def test_multi_judge_mean_in_table1_and_each_judge_in_details(tmp_path):
    _result(tmp_path / "e" / "judge" / "j1" / "x", "j1", (6, 2, 2))   # PWS 1.4
    _result(tmp_path / "e" / "judge" / "j2" / "x", "j2", (2, 2, 6), "offline")  # PWS 0.6
    (tmp_path / "e" / "judge" / "j3" / "unfinished").mkdir(parents=True)  # no DONE: ignored
    df = collect(tmp_path)
    assert len(df) == 4 and set(df.judge) == {"j1", "j2"}
    md = render(df)
    table1 = md.split("## All results")[0]
    assert "alpaca / m / 5%" in table1 and "judges: j1, j2" in table1
    row = [l for l in table1.splitlines() if l.startswith("| gsnr")][0]
    assert float(row.split("|")[3]) == 1.0  # mean of 1.4 and 0.6
    assert "j2 (offline, not an LLM)" in md and "6/2/2" in md and "12.5" in md
