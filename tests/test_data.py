import json

import pytest

from selbench.data import PoolError, content_id, load_eval_set, load_pool

GOOD = {"instruction": "Say hi", "input": "", "output": "hi"}


def write(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return str(p)


# the broken-file corpus: (file name, content, expected message fragments)
BROKEN = [
    ("invalid.json", '[{"instruction": "a", "output": "b"},', ["invalid.json", "invalid JSON", "line 1"]),
    ("invalid.jsonl", json.dumps(GOOD) + "\n{not json}\n", ["invalid.jsonl", "row 2", "invalid JSON"]),
    ("missing.json", json.dumps([GOOD, {"instruction": "x"}]), ["missing.json", "row 2", "'output'"]),
    ("missing_inst.jsonl", json.dumps({"output": "x"}), ["row 1", "'instruction'"]),
    ("nonstring.json", json.dumps([GOOD, GOOD | {"output": "y", "input": 3}]), ["row 2", "field 'input'", "int"]),
    ("nonstring_out.json", json.dumps([{"instruction": "a", "output": ["x"]}]), ["row 1", "field 'output'", "list"]),
    ("notobject.json", json.dumps([GOOD, "just a string"]), ["row 2", "expected an object"]),
    ("notlist.json", json.dumps({"instruction": "a"}), ["expected a JSON list"]),
    ("empty.json", "", ["empty.json", "empty"]),
    ("blank.jsonl", "\n\n", ["blank.jsonl", "empty"]),
    ("emptylist.json", "[]", ["no rows"]),
    ("latin1.json", '[{"instruction": "caf\xe9", "output": "x"}]'.encode("latin-1"), ["latin1.json", "not UTF-8", "line 1"]),
    ("empty_instruction.json", json.dumps([{"instruction": "  ", "output": "x"}]), ["row 1", "'instruction' is empty"]),
    ("surrogate.jsonl", json.dumps(GOOD) + '\n{"instruction": "x", "output": "bad \\udcff"}\n',
     ["surrogate.jsonl", "row 2", "field 'output'", "lone surrogate"]),
    ("surrogate_input.json", '[{"instruction": "x", "input": "\\ud800", "output": "y"}]',
     ["row 1", "field 'input'", "lone surrogate"]),
    ("deep.json", "[" * 200_000 + "]" * 200_000, ["deep.json", "nested too deeply"]),
    ("deep_row.jsonl", json.dumps(GOOD) + "\n" + "[" * 200_000 + "]" * 200_000 + "\n",
     ["deep_row.jsonl", "row 2", "nested too deeply"]),
]


@pytest.mark.parametrize("name,content,fragments", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_pool_files_give_clear_errors(tmp_path, name, content, fragments):
    path = write(tmp_path, name, content)
    with pytest.raises(PoolError) as e:
        load_pool(path)
    for frag in fragments:
        assert frag in str(e.value), str(e.value)


def test_documented_skips_are_counted(tmp_path):
    rows = [GOOD, GOOD, {"instruction": "b", "output": "   "}, {"instruction": "c", "output": "ok"}]
    pool = load_pool(write(tmp_path, "p.json", json.dumps(rows)))
    assert len(pool) == 2
    assert pool.skipped == {"empty_output": 1, "duplicate": 1}


def test_ids_are_stable_content_hashes_and_input_is_optional(tmp_path):
    a = load_pool(write(tmp_path, "a.jsonl", json.dumps({"instruction": "x", "output": "y"})))
    b = load_pool(write(tmp_path, "b.json", json.dumps([{"instruction": "x", "input": "", "output": "y"}])))
    assert a.rows[0]["id"] == b.rows[0]["id"] == content_id("x", "", "y")


def test_missing_file_and_unreachable_hub(tmp_path, monkeypatch):
    from selbench.data import DataNotFound

    with pytest.raises(DataNotFound, match="not found"):
        load_pool(str(tmp_path / "nope.json"))
    monkeypatch.delenv("SELBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataNotFound, match="--data-dir"):
        load_pool("alpaca")


def test_real_alpaca_and_eval_sets(data_dir):
    pool = load_pool("alpaca", str(data_dir))
    assert len(pool) == 52002 - 28 and pool.skipped["empty_output"] == 28
    sample = load_pool("alpaca", str(data_dir), size=100, seed=3)
    again = load_pool("alpaca", str(data_dir), size=100, seed=3)
    assert sample.ids == again.ids and len(set(sample.ids)) == 100
    wiz, vic = load_eval_set("wizardlm", str(data_dir)), load_eval_set("vicuna", str(data_dir))
    assert len(wiz) == 218 and len(vic) == 80
    assert wiz[0]["prompt"].startswith("If a car travels 120 miles")
    assert all("reference" in it for it in vic)
    for name, n in (("koala", 180), ("lima", 300), ("sinstruct", 252)):
        items = load_eval_set(name, str(data_dir))
        assert len(items) == n and all(it["prompt"].strip() for it in items)
    assert len(load_eval_set("vicuna", str(data_dir), limit=5)) == 5


def test_a_directory_or_fifo_as_pool_is_an_error_not_a_hang(tmp_path):
    import os

    d = tmp_path / "pool.json"
    d.mkdir()
    with pytest.raises(PoolError, match="pool.json: is a directory"):
        load_pool(str(d))
    fifo = tmp_path / "pool.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(PoolError, match="pool.jsonl: not a regular file"):
        load_pool(str(fifo))  # reading it would block forever


def test_skip_message_of_a_sample_speaks_of_the_file_not_the_sample(tmp_path):
    rows = [{"instruction": f"i{i}", "output": "" if i % 10 == 0 else "o"} for i in range(100)]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rows))
    pool = load_pool(str(path), size=20, seed=0)
    text = pool.describe()
    assert "20 examples, a seeded sample of the 90 usable rows" in text
    assert "the file's skipped rows: {'empty_output': 10}" in text
    assert "(skipped" not in load_pool(str(path), size=20).describe()
    assert "(skipped {'empty_output': 10})" in load_pool(str(path)).describe()


def test_column_mapping_and_chat_messages_pools(tmp_path):
    rows = [{"prompt": "Say hi", "response": "hi", "context": ""},
            {"prompt": "Add", "response": "3", "context": "1+2"}]
    p = tmp_path / "cols.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    pool = load_pool(str(p), columns={"instruction": "prompt", "output": "response", "input": "context"})
    assert [(r["instruction"], r["input"], r["output"]) for r in pool.rows] == [("Say hi", "", "hi"), ("Add", "1+2", "3")]
    chat = [{"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Q1"},
                          {"role": "assistant", "content": "A1"}]},
            {"conversations": [{"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]}]
    c = tmp_path / "chat.json"
    c.write_text(json.dumps(chat))
    pool = load_pool(str(c))
    assert [(r["instruction"], r["output"]) for r in pool.rows] == [("Q1", "A1"), ("Q2", "A2")]
    # a mapping that names a missing column is a clear error naming file, row and field
    with pytest.raises(PoolError, match="row 1.*'output'"):
        load_pool(str(p), columns={"instruction": "prompt", "output": "answer"})


def test_custom_eval_set_from_a_jsonl_path(tmp_path):
    p = tmp_path / "my_set.jsonl"
    p.write_text(json.dumps({"question": "Why?", "reference": "Because."}) + "\n"
                 + json.dumps({"id": "q2", "prompt": "How?"}) + "\n")
    items = load_eval_set(str(p))
    assert items == [{"id": "1", "prompt": "Why?", "reference": "Because."}, {"id": "q2", "prompt": "How?"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"foo": "x"}) + "\n")
    with pytest.raises(PoolError, match="bad.jsonl: row 1: no prompt field"):
        load_eval_set(str(bad))


def test_shipped_eval_set_sizes_match_their_files(data_dir):
    """The plan estimates generation before the data is here from these sizes."""
    from selbench.data import EVAL_SETS, expected_eval_size, load_eval_set

    for name in EVAL_SETS.names():
        assert expected_eval_size(name) == len(load_eval_set(name, str(data_dir))), name
        assert expected_eval_size(name, 5) == 5
    assert expected_eval_size("self-instruct") == 252 and expected_eval_size("my/own.jsonl") is None
