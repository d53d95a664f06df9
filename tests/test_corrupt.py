"""The ground-truth corruption track: the corrupted pool and its record are exact, the
metrics agree with independent computations, and the track puts the controls where they
must be."""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from selbench.api import select
from selbench.cli import main
from selbench.corrupt import (CLEAN, KIND_NAMES, REFUSALS, TRUNCATE_KEEP, CorruptionRecord,
                              corrupt_pool, parse_kinds, record_path_for, write_corrupted)
from selbench.data import Pool, PoolError, content_id, load_pool
from selbench.selectors import SELECTORS, Selection, Selector, SelectorConfig
from selbench.selectors.base import budget, rank_by_score
from selbench.track import (TRACK_SEED_TAG, auroc, auroc_bootstrap, percentile_ci,
                            render_markdown, run_corruption_track, share, share_bootstrap,
                            to_csv)

VOCAB = ("river mountain cloud engine violin garden planet market silver window copper "
         "harbor tiger forest pencil rocket candle desert bridge marble orchid falcon "
         "lantern meadow glacier").split()


def make_rows(n: int = 120, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        topic = VOCAB[i % len(VOCAB)]
        inst = f"Describe the {topic} in example {i}."
        words = [topic] + [VOCAB[j] for j in rng.integers(0, len(VOCAB), int(rng.integers(9, 25)))]
        rows.append({"id": f"x{i}", "instruction": inst, "input": "" if i % 4 else f"note {i}",
                     "output": " ".join(words) + "."})
    return rows


def brute_auroc(scores, positive) -> float:
    """Pair counting: each (positive, negative) pair scores 1 if the positive is higher, 1/2
    if equal; NaN is below every number (and equal to NaN)."""
    s = [(-math.inf if (isinstance(x, float) and math.isnan(x)) else x) for x in scores]
    pos = [v for v, p in zip(s, positive) if p]
    neg = [v for v, p in zip(s, positive) if not p]
    tot = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return tot / (len(pos) * len(neg))


# --------------------------------------------------------------------------- the corrupted pool
def test_corruption_is_deterministic_and_independent_of_kind_order():
    rows = make_rows()
    a = corrupt_pool(rows, 0.3, None, seed=5)
    b = corrupt_pool(rows, 0.3, list(reversed(KIND_NAMES)), seed=5)
    assert a == b
    c = corrupt_pool(rows, 0.3, None, seed=6)
    assert c[0] != a[0]


def test_the_record_is_exact(tmp_path):
    src = make_rows(140)
    new, rec = corrupt_pool(src, 0.35, None, seed=2)
    assert len(new) == len(src)
    assert rec["n_corrupted"] + sum(rec["dropped"].values()) == round(0.35 * len(src))
    assert set(rec["counts"]) == set(KIND_NAMES) and all(v > 0 for v in rec["counts"].values())
    assert sum(rec["counts"].values()) == rec["n_corrupted"] == len(rec["rows"])
    by_pos = {c["position"]: c for c in rec["rows"]}
    text = lambda r: (r["instruction"], r.get("input", ""), r["output"])  # noqa: E731
    for i, (s, r) in enumerate(zip(src, new)):
        assert r["id"] == content_id(*text(r))
        if i not in by_pos:  # unchanged rows: byte for byte the source
            assert text(r) == text(s)
            assert r["id"] in rec["clean_ids"]
            continue
        c = by_pos[i]
        assert text(r) != text(s) and c["id"] == r["id"]
        assert c["original_id"] == content_id(*text(s))
        d, k = c["details"], c["kind"]
        if k == "swap":
            assert r["output"] == src[d["output_from"]]["output"] and d["output_from"] in by_pos
            assert r["instruction"] == s["instruction"]
        elif k == "truncate":
            assert TRUNCATE_KEEP[0] <= d["words_kept"] <= TRUNCATE_KEEP[1]
            assert r["output"].split() == s["output"].split()[:d["words_kept"]]
        elif k == "unrelated":
            j = d["output_from"]
            assert r["output"] == src[j]["output"] and j not in by_pos
        elif k == "garbled":
            assert sorted(r["output"].replace(" ", "")) == sorted("".join(s["output"].split()))
            assert len(r["output"].split()) == len(s["output"].split())
        elif k == "duplicate":
            j = d["copy_of"]
            assert j not in by_pos
            assert (r["input"], r["output"]) == (src[j]["input"], src[j]["output"])
            assert r["instruction"] != src[j]["instruction"]
            assert r["instruction"].lower().split() == src[j]["instruction"].lower().split() or \
                r["instruction"].rstrip(".?!") == src[j]["instruction"].rstrip(".?!")
        elif k == "echo":
            assert r["output"] == s["instruction"]
        elif k == "refusal":
            assert r["output"] == REFUSALS[d["template"]]
    assert len(rec["clean_ids"]) == len(src) - rec["n_corrupted"]
    # read back: every row labelled, the corrupted ones with their kind
    rr = CorruptionRecord(rec)
    labels = rr.kinds_of(Pool("p", new, "test"))
    assert [labels[i] for i in by_pos] == [by_pos[i]["kind"] for i in by_pos]
    assert labels.count(CLEAN) == len(src) - len(by_pos)


def test_corrupted_file_loads_without_skips_and_duplicates_survive(tmp_path):
    src = make_rows(100)
    new, rec = corrupt_pool(src, 0.3, ["duplicate", "swap"], seed=0)
    path, side = write_corrupted(tmp_path / "c.json", new, rec)
    assert side == record_path_for(path) == tmp_path / "c.corruption.json"
    pool = load_pool(str(path))
    assert len(pool) == len(src) and not any(pool.skipped.values())
    assert pool.ids == [r["id"] for r in new]
    dups = [c for c in rec["rows"] if c["kind"] == "duplicate"]
    assert len(dups) == rec["counts"]["duplicate"] > 0
    ids = set(pool.ids)
    assert all(c["id"] in ids and c["copy_of_id"] in ids for c in
               ({**c, **c["details"]} for c in dups))
    # the jsonl form too
    p2, _ = write_corrupted(tmp_path / "c2.jsonl", new, rec)
    assert load_pool(str(p2)).ids == pool.ids


def test_real_alpaca_sample_roundtrip(tmp_path, data_dir):
    pool = load_pool("alpaca", str(data_dir), 400, 3)
    new, rec = corrupt_pool(pool.rows, 0.3, None, seed=1)
    path, _ = write_corrupted(tmp_path / "a.json", new, rec)
    back = load_pool(str(path))
    assert len(back) == 400 and not any(back.skipped.values())
    labels = CorruptionRecord.read(record_path_for(path)).kinds_of(back)
    assert 400 - labels.count(CLEAN) == rec["n_corrupted"] >= 115


def test_files_are_never_overwritten(tmp_path):
    new, rec = corrupt_pool(make_rows(30), 0.3, None, 0)
    write_corrupted(tmp_path / "c.json", new, rec)
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_corrupted(tmp_path / "c.json", new, rec)
    (tmp_path / "d.corruption.json").write_text("{}")  # only the record exists
    with pytest.raises(FileExistsError):
        write_corrupted(tmp_path / "d.json", new, rec)
    assert not (tmp_path / "d.json").exists()


def test_bad_arguments():
    with pytest.raises(ValueError, match="did you mean 'swap'"):
        parse_kinds("swpa")
    with pytest.raises(ValueError, match="fraction"):
        corrupt_pool(make_rows(10), 1.0)
    rows = make_rows(10)
    with pytest.raises(ValueError, match="distinct"):
        corrupt_pool(rows + rows[:1], 0.3)
    new, rec = corrupt_pool(make_rows(40), 0.3, None, 0)
    other = Pool("o", make_rows(40, seed=9), "other.json")
    with pytest.raises(PoolError, match="another pool"):
        CorruptionRecord(rec).kinds_of(other)


# --------------------------------------------------------------------------- metrics
def test_auroc_matches_pair_counting_and_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(4, 60))
        y = rng.random(n) < rng.uniform(0.2, 0.8)
        if y.all() or not y.any():
            y[0], y[-1] = True, False
        s = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.normal(size=n)
        assert auroc(s, y) == pytest.approx(brute_auroc(list(s), list(y)), abs=1e-12)
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        s[rng.random(n) < 0.3] = np.nan  # NaN ranks last, NaNs tie
        assert auroc(s, y) == pytest.approx(brute_auroc(list(s), list(y)), abs=1e-12)
    assert auroc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    assert auroc([2.0, 1.0], [True, False]) == 1.0 and auroc([2.0, 1.0], [False, True]) == 0.0
    assert math.isnan(auroc([1.0, 2.0], [True, True]))


def test_auroc_bootstrap_replicates_are_exact_and_reproducible():
    rng = np.random.default_rng(4)
    s = rng.integers(0, 5, 40).astype(float)
    s[:3] = np.nan
    y = rng.random(40) < 0.6
    boots = auroc_bootstrap(s, y, n_boot=50, seed=7)
    assert np.array_equal(boots, auroc_bootstrap(s, y, n_boot=50, seed=7))
    assert not np.array_equal(boots, auroc_bootstrap(s, y, n_boot=50, seed=8))
    # each replicate = pair counting on the stratified resample drawn from the same stream
    r = np.random.default_rng([7, TRACK_SEED_TAG, int(y.sum()), int((~y).sum())])
    ip = r.integers(0, int(y.sum()), size=(50, int(y.sum())))
    iN = r.integers(0, int((~y).sum()), size=(50, int((~y).sum())))
    sp, sn = s[y], s[~y]
    for b in range(50):
        ss = list(sp[ip[b]]) + list(sn[iN[b]])
        yy = [True] * ip.shape[1] + [False] * iN.shape[1]
        assert boots[b] == pytest.approx(brute_auroc(ss, yy), abs=1e-12)
    lo, hi = percentile_ci(boots)
    assert lo <= auroc(s, y) <= hi


def test_clean_share_and_its_bootstrap():
    flags = np.array([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], dtype=bool)
    assert share(flags) == 7 / 10
    boots = share_bootstrap(flags, 400, seed=1)
    assert np.array_equal(boots, share_bootstrap(flags, 400, seed=1))
    lo, hi = percentile_ci(boots)
    assert lo <= 0.7 <= hi and 0.3 < lo < 0.7 < hi <= 1.0
    assert np.all((boots * 10) == np.round(boots * 10))  # means of 10 resampled flags
    assert math.isnan(share([]))


# --------------------------------------------------------------------------- the track
@dataclass
class _LenConfig(SelectorConfig):
    keep_above_median: bool = False


class _Length(Selector):
    """Test selector: score = response words (short responses last); NaN for echo-like rows
    whose response equals the instruction; optionally a filter that never takes the rows
    at or below the median."""

    config_cls = _LenConfig

    def score(self, pool, ctx):
        return np.array([np.nan if r["output"] == r["instruction"] else len(r["output"].split())
                         for r in pool.rows], dtype=float)

    def select(self, pool, ratio, ctx, scores=None):
        if not self.config.keep_above_median:
            return super().select(pool, ratio, ctx, scores)
        s = self.score(pool, ctx)
        keep = np.isfinite(s) & (s > np.nanmedian(s))
        k = budget(ratio, len(pool))
        order = [int(i) for i in rank_by_score(np.where(keep, s, np.nan), ctx.seed) if keep[i]]
        chosen = order[:k]
        return Selection(chosen, s, {"budget": k, "short_by": k - len(chosen)})


def _register_test_selector():
    if "test-length" not in SELECTORS:
        SELECTORS.add("test-length", _Length)


@pytest.fixture
def corrupted(tmp_path):
    new, rec = corrupt_pool(make_rows(160), 0.3, None, seed=3)
    path, _ = write_corrupted(tmp_path / "pool.json", new, rec)
    pool = load_pool(str(path))
    return pool, CorruptionRecord.read(record_path_for(path)), path


def test_track_puts_the_controls_where_they_must_be(corrupted, tmp_path, capsys):
    _register_test_selector()
    pool, rec, _ = corrupted
    labels = np.array(rec.kinds_of(pool), dtype=object)
    clean = labels == CLEAN
    res = run_corruption_track(pool, rec, ["random", "oracle-clean", "oracle-corrupt",
                                           "test-length"], [0.1, 0.25], tmp_path / "out",
                               seed=0, n_boot=300, params={}, log=lambda m: None)
    by = {s["name"]: s for s in res["selectors"]}
    assert not any("error" in s for s in by.values())
    assert res["clean_fraction"] == pytest.approx(clean.mean())
    oc, oa, rnd = by["oracle-clean"], by["oracle-corrupt"], by["random"]
    assert oc["auroc"]["overall"]["value"] == 1.0 and oa["auroc"]["overall"]["value"] == 0.0
    for k in res["kinds"]:
        assert oc["auroc"][k]["value"] == 1.0 and oa["auroc"][k]["value"] == 0.0
    for x in oc["ratios"]:
        assert x["clean_share"]["value"] == 1.0 and x["random_expects"] == pytest.approx(clean.mean())
    assert all(x["clean_share"]["value"] == 0.0 for x in oa["ratios"])
    a = rnd["auroc"]["overall"]
    assert abs(a["value"] - 0.5) < 0.15 and a["lo"] < 0.5 < a["hi"]
    # every estimate inside its own CI
    for s in by.values():
        for e in s["auroc"].values():
            assert e["lo"] <= e["value"] <= e["hi"]
        for x in s["ratios"]:
            assert x["clean_share"]["lo"] <= x["clean_share"]["value"] <= x["clean_share"]["hi"]
    # the test selector: AUROC = direct AUROC of its scores; clean share = direct count
    ln = by["test-length"]
    scores = _Length().score(pool, None)
    assert ln["auroc"]["overall"]["value"] == pytest.approx(brute_auroc(list(scores), list(clean)))
    trunc = clean | (labels == "truncate")
    assert ln["auroc"]["truncate"]["value"] == pytest.approx(
        brute_auroc(list(scores[trunc]), list(clean[trunc])))
    assert ln["auroc"]["truncate"]["value"] > 0.9  # short responses are ranked last
    nan_rows = np.isnan(scores)  # the echo rows
    assert ln["unranked"] == {"clean": int((nan_rows & clean).sum()),
                              "corrupted": int((nan_rows & ~clean).sum())} and nan_rows.any()
    for x in ln["ratios"]:
        sel = select("test-length", x["ratio"], pool=pool, seed=0)
        assert x["clean_share"]["value"] == pytest.approx(clean[sel.indices].mean())
        assert x["by_kind"][CLEAN]["selected"] == int(clean[sel.indices].sum())
        assert sum(b["selected"] for b in x["by_kind"].values()) == x["n_selected"]
    md, table = render_markdown(res), to_csv(res)
    assert "| oracle-clean | control | 1.000 [1.000, 1.000] | clean first |" in md
    assert "CORRUPTED first" in md and table.count("\n") > 20
    # a rerun reuses every cached selection and gives the same numbers
    logs = []
    again = run_corruption_track(pool, rec, ["random", "oracle-clean", "oracle-corrupt",
                                             "test-length"], [0.1, 0.25], tmp_path / "out",
                                 seed=0, n_boot=300, params={}, log=logs.append)
    assert all("[cached]" in m for m in logs if "select/" in m) and any("[cached]" in m for m in logs)
    strip = lambda r: [{k: v for k, v in s.items() if k != "seconds"} for s in r["selectors"]]  # noqa: E731
    assert json.dumps(strip(again), default=str) == json.dumps(strip(res), default=str)


def test_track_counts_rows_a_filter_never_takes_as_nan(corrupted, tmp_path):
    _register_test_selector()
    pool, rec, _ = corrupted
    clean = np.array(rec.kinds_of(pool), dtype=object) == CLEAN
    res = run_corruption_track(pool, rec, ["test-length"], [0.1], tmp_path / "o", n_boot=50,
                               params={"test-length": {"keep_above_median": True}},
                               log=lambda m: None)
    s = res["selectors"][0]
    scores = _Length().score(pool, None)
    keep = np.isfinite(scores) & (scores > np.nanmedian(scores))
    masked = np.where(keep, scores, np.nan)
    assert s["auroc"]["overall"]["value"] == pytest.approx(brute_auroc(list(masked), list(clean)))
    assert s["unranked"]["clean"] + s["unranked"]["corrupted"] == int((~keep).sum())
    raw = run_corruption_track(pool, rec, ["test-length"], [0.1], tmp_path / "o", n_boot=50,
                               params={"test-length": {"keep_above_median": True}},
                               raw_scores=True, log=lambda m: None)["selectors"][0]
    assert raw["auroc"]["overall"]["value"] == pytest.approx(brute_auroc(list(scores), list(clean)))


def test_oracles_find_the_record_next_to_the_pool_file(corrupted, tmp_path):
    pool, rec, path = corrupted
    bad = {r["id"] for r in rec.data["rows"]}
    sel = select("oracle-clean", 0.5, pool=str(path), seed=1)
    assert not {pool.rows[i]["id"] for i in sel.indices} & bad
    sample = select("oracle-corrupt", 0.2, pool=str(path), pool_size=60, seed=1)
    assert sample.info["ids"] and set(sample.info["ids"]) <= bad
    # an explicit record, and a pool without one
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps([{k: r[k] for k in ("instruction", "input", "output")}
                                 for r in pool.rows]))
    assert select("oracle-clean", 0.5, pool=str(plain), seed=1,
                  params={"record": str(record_path_for(path))}).indices == sel.indices
    with pytest.raises(PoolError, match="needs a corruption record"):
        select("oracle-clean", 0.5, pool=str(plain))


# --------------------------------------------------------------------------- CLI
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_corrupt_and_track(tmp_path, capsys):
    src = tmp_path / "clean.json"
    src.write_text(json.dumps([{k: r[k] for k in ("instruction", "input", "output")}
                               for r in make_rows(80)]))
    out = tmp_path / "c.json"
    assert main(["corrupt", str(src), "--out", str(out), "--fraction", "0.25", "--seed", "4"]) == 0
    assert "corrupted 20 of 80 rows" in capsys.readouterr().out
    rec = json.loads(record_path_for(out).read_text())
    assert rec["n_corrupted"] == 20 and rec["source"]["source"] == str(src.resolve())
    assert main(["track", "corruption", "--pool", str(out), "--out", str(tmp_path / "t"),
                 "--ratio", "0.1", "--boot", "50"]) == 0
    text = capsys.readouterr().out
    assert "| oracle-clean | control | 1.000" in text and (tmp_path / "t" / "track.csv").exists()
    # a clean pool is corrupted by the track itself, into its out folder
    assert main(["track", "corruption", "--pool", str(src), "--out", str(tmp_path / "t2"),
                 "--ratio", "0.1", "--boot", "20", "--fraction", "0.25", "--seed", "4"]) == 0
    capsys.readouterr()
    made = json.loads((tmp_path / "t2" / "pool" / "corrupted.corruption.json").read_text())
    assert made["rows"] == rec["rows"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["corrupt", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o.json")]) == 2
    assert "not found" in _one_error_line(capsys)
    src = tmp_path / "clean.json"
    src.write_text(json.dumps([{k: r[k] for k in ("instruction", "input", "output")}
                               for r in make_rows(30)]))
    (tmp_path / "taken.json").write_text("[]")
    assert main(["corrupt", str(src), "--out", str(tmp_path / "taken.json")]) == 2
    assert "exists" in _one_error_line(capsys)
    assert main(["corrupt", str(src), "--out", str(tmp_path / "o.json"), "--kinds", "swap,echoo"]) == 2
    assert "unknown corruption kind 'echoo'" in _one_error_line(capsys)
    assert main(["corrupt", str(src), "--out", str(tmp_path / "o.json"), "--fraction", "1.5"]) == 2
    assert "fraction" in _one_error_line(capsys)
    assert main(["corrupt", str(src), "--out", str(tmp_path / "o.txt")]) == 2
    assert ".json or .jsonl" in _one_error_line(capsys)
    assert not (tmp_path / "o.json").exists()
    assert main(["track", "corruption", "--pool", str(src), "--selectors", "randm"]) == 2
    assert "did you mean 'random'" in _one_error_line(capsys)
    assert main(["track", "corruption", "--pool", str(src), "--selectors", "ifd", "--param", "ifd.nope=1"]) == 2
    assert "nope" in _one_error_line(capsys)
    assert main(["track", "corruption", "--pool", str(src), "--param", "ifd.batch_size=1"]) == 2
    assert "not among the track's selectors" in _one_error_line(capsys)
    assert main(["track", "corruption", "--pool", str(tmp_path / "none.json")]) == 2
    assert "not found" in _one_error_line(capsys)


def test_the_data_corrupt_pool_option_carries_the_record(tmp_path, data_dir):
    """`data.corrupt` corrupts the loaded sample (the rows `bench corrupt` would write): the
    oracles read the record from the pool, the pool key (so every stage key) changes, and
    export rebuilds the same corrupted pool from the select stage's record."""
    from selbench.benchmark.pipeline import Pipeline
    from selbench.config import build_config
    from selbench.corrupt import CLEAN, corrupt_pool, find_record
    from selbench.data import load_pool
    from selbench.export import _pool_for
    from selbench.selectors import build_selector

    over = {"data.data_dir": str(data_dir), "data.pool_size": 80, "runs_dir": str(tmp_path),
            "data.corrupt": {"fraction": 0.25, "seed": 3}}
    pipe = Pipeline(build_config([], over), progress=False, log=lambda m: None)
    data = pipe.load_data()
    clean = load_pool("alpaca", str(data_dir), 80, 0)
    rows, record = corrupt_pool(clean.rows, 0.25, None, 3)
    assert [r["id"] for r in data.pool.rows] == [r["id"] for r in rows]
    assert data.pool.corruption["n_corrupted"] == record["n_corrupted"] == 20
    kinds = find_record(data.pool).kinds_of(data.pool)
    assert sum(k != CLEAN for k in kinds) == 20
    key, sub = pipe.select(build_selector("oracle-clean"), 0.25)
    assert len(sub["indices"]) == 20 and all(kinds[i] == CLEAN for i in sub["indices"])
    plain = Pipeline(build_config([], {k: v for k, v in over.items() if k != "data.corrupt"}),
                     progress=False, log=lambda m: None)
    plain.load_data()
    assert plain.keys.select_key(build_selector("random"), 0.25) != pipe.keys.select_key(
        build_selector("random"), 0.25)
    assert _pool_for(pipe.rd.path(key)).fingerprint() == data.pool.fingerprint()


def test_a_study_counts_the_planted_corruption_each_subset_took(tmp_path, data_dir):
    """The study reader rebuilds a run's corrupted pool from its select record (so lengths
    are not lost to a fingerprint mismatch) and counts the corrupted rows of each subset,
    checked against the record corrupt_pool writes."""
    import pandas as pd

    from selbench.corrupt import corrupt_pool
    from selbench.data import load_pool
    from selbench.leaderboard.data import StudyData, _lengths
    from selbench.leaderboard.report import corruption_section

    clean = load_pool("alpaca", str(data_dir), 60, 0)
    rows, record = corrupt_pool(clean.rows, 0.25, None, 2)
    bad = {r["id"]: r["kind"] for r in record["rows"]}
    ids = [r["id"] for r in rows[::3]]  # a subset: every third row
    want = sum(i in bad for i in ids)
    data = {"pool": "alpaca", "data_dir": str(data_dir), "pool_size": 60, "sample_seed": 0,
            "columns": {}, "corrupt": {"fraction": 0.25, "seed": 2}}
    from selbench.corrupt import apply_corruption

    fp = apply_corruption(clean, {"fraction": 0.25, "seed": 2}).fingerprint()
    subs = pd.DataFrame([{"experiment": "e", "select_key": "k", "selector": "random", "seed": 0,
                          "ratio": 0.33, "setting_fp": "exp:s", "ids": ids}])
    skipped: list[str] = []
    L = _lengths(subs, {("e", "k"): {"data": data, "fingerprint": fp}}, None, skipped, [])
    assert not skipped
    sel = L[L.group == "k"].iloc[0]
    assert sel.n == len(ids) and sel.corrupted == want
    per = json.loads(sel.corrupted_kinds)
    assert sum(per.values()) == want and all(per[k] == sum(bad.get(i) == k for i in ids) for k in per)
    pool = L[L.group == "pool"].iloc[0]
    assert pool.corrupted == record["n_corrupted"] == 15
    md = corruption_section(StudyData(results=pd.DataFrame(), lengths=L))
    row = next(l for l in md.splitlines() if l.startswith("| random"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["random", "33%", "0", str(len(ids)), f"{want} ({want / len(ids):.0%})"]


def test_the_oracles_run_under_the_proxy_layer_of_a_grid(tmp_path, data_dir):
    """The mini grid sets proxy.record: train for G-SNR; the oracles' own `record` (the
    corruption record file) must not receive it (it did: every oracle cell failed with
    "train: corruption record not found")."""
    from selbench.benchmark.pipeline import Pipeline
    from selbench.config import build_config
    from selbench.corrupt import CLEAN, find_record
    from selbench.selectors import build_selector

    over = {"data.data_dir": str(data_dir), "data.pool_size": 60, "runs_dir": str(tmp_path),
            "data.corrupt": {"fraction": 0.25, "seed": 1}, "proxy.record": "train",
            "proxy.batch_size": 4, "selector": "oracle-clean"}
    pipe = Pipeline(build_config([], over), progress=False, log=lambda m: None)
    data = pipe.load_data()
    sel = pipe.build_selector()
    assert sel.config.record is None
    kinds = find_record(data.pool).kinds_of(data.pool)
    _, sub = pipe.select(sel, 0.5)
    assert len(sub["indices"]) == 30 and all(kinds[i] == CLEAN for i in sub["indices"])
    # the proxy layer still reaches the proxy selectors, top level and profile
    cfg = pipe.cfg
    assert build_selector("gsnr", None, cfg.proxy).config.profile.record == "train"
    assert build_selector("ifd", None, cfg.proxy).config.batch_size == 4
    assert build_selector("random", None, cfg.proxy).config == build_selector("random").config


def test_an_explicit_record_file_is_keyed_by_its_content(tmp_path):
    from selbench.selectors import build_selector
    from selbench.selectors.base import SelectionContext

    rec = tmp_path / "r.corruption.json"
    rec.write_text('{"a": 1}')
    sel = build_selector("oracle-clean", {"record": str(rec)})
    k1 = sel.context_identity(SelectionContext())
    rec.write_text('{"a": 2}')
    assert sel.context_identity(SelectionContext()) != k1
    assert build_selector("oracle-clean").context_identity(SelectionContext()) == {}
