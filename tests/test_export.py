"""bench export: a subset with source positions and scores; answers in alpaca_eval format."""
import json

from test_pipeline import write_config

from selbench.cli import main
from selbench.config import build_config


def test_export_subset_jsonl_and_hf_with_source_positions(tmp_path, tiny_model_dir, data_dir,
                                                          tiny_pool_rows):
    from datasets import load_from_disk

    from selbench.benchmark.pipeline import Pipeline
    from selbench.runs import write_manifest

    cfg = build_config([str(write_config(tmp_path, tiny_model_dir, data_dir, tiny_pool_rows))])
    pipe = Pipeline(cfg, progress=False, log=lambda m: None)
    write_manifest(pipe.root, ["test"], cfg, {})
    pipe.load_data()
    key, subset = pipe.select(pipe.build_selector(), 0.25)
    folder = pipe.rd.path(key)
    out = tmp_path / "subset.jsonl"
    assert main(["export", "subset", str(folder), "--out", str(out)]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == len(subset["indices"]) == 6
    source = json.loads((tmp_path / "pool.json").read_text())
    for r in rows:
        src = source[r["position"]]
        assert (src["instruction"], src["output"]) == (r["instruction"], r["output"])
    assert [r["rank"] for r in rows] == list(range(6))
    assert main(["export", "subset", str(folder), "--out", str(tmp_path / "hf"), "--format", "hf"]) == 0
    ds = load_from_disk(str(tmp_path / "hf"))
    assert ds.num_rows == 6 and ds[0]["position"] == rows[0]["position"]


def test_export_answers_in_alpaca_eval_format(tmp_path):
    gen = tmp_path / "generate" / "m-1234"
    gen.mkdir(parents=True)
    (gen / "vicuna.jsonl").write_text(json.dumps({"id": "1", "prompt": "Q?", "answer": "A."}) + "\n")
    out = tmp_path / "answers.json"
    assert main(["export", "answers", str(gen), "--out", str(out), "--generator", "mine"]) == 0
    assert json.loads(out.read_text()) == [{"instruction": "Q?", "output": "A.", "generator": "mine",
                                           "dataset": "vicuna", "id": "1"}]
