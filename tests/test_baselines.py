"""The cheap baselines of issue #19 (longest, length, perplexity, dsir, kcenter, knn-density,
embed-target, alpagasus), each checked against an independent computation of its
definition: a brute-force or straightforward re-implementation written here, or the
reference's own code where it is installed (data-selection)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from selbench.data import Pool
from selbench.judges.base import Completion, Judge, JudgeItem, NotPromptable, item_key
from selbench.judges.offline import RefSimConfig, RefSimJudge
from selbench.judges.prompts import render
from selbench.selectors import SELECTORS, SelectionContext, build_selector
from selbench.selectors.alpagasus import parse_rating, rating_messages
from selbench.selectors.dsir import builtin_counts, featurizer, gumbel_topk, _Hasher
from selbench.selectors.embed_target import round_robin
from selbench.selectors.kcenter import kcenter_greedy
from selbench.selectors.knn_density import knn_kde
from selbench.selectors.perplexity import MIDDLE_START

NEW = ["longest", "length", "perplexity", "dsir", "kcenter", "knn-density", "embed-target",
       "alpagasus"]


@pytest.fixture
def pool(tiny_pool_rows):
    return Pool("tiny", tiny_pool_rows, "test")


def ctx(tmp_path=None, **kw):
    kw.setdefault("log", lambda m: None)
    kw.setdefault("progress", False)
    return SelectionContext(seed=kw.pop("seed", 0), shard_root=tmp_path, pool_key="tiny", **kw)


def threshold_property(values: np.ndarray, chosen: list[int]) -> None:
    """A top-k set: nothing left out is larger than anything taken."""
    out = np.setdiff1d(np.arange(len(values)), chosen)
    if len(out) and len(chosen):
        assert values[chosen].min() >= values[out].max()


# --------------------------------------------------------------------------- registry / meta
def test_every_new_selector_is_registered_with_its_meta():
    for name in NEW:
        cls = SELECTORS.get(name)
        m = cls.meta()
        assert m["family"] == "baseline" and m["reference"] and m["paper_name"]
        assert m["cost_class"] in ("free", "cpu-seconds", "proxy-forward", "proxy-train", "judge-calls")
        assert set(m["needs"]) <= {"proxy", "judge", "embeddings", "target"}
    assert SELECTORS.get("alpagasus").needs == ("judge",)
    assert "target" in SELECTORS.get("dsir").needs and "target" in SELECTORS.get("embed-target").needs
    assert "embeddings" in SELECTORS.get("kcenter").needs


# --------------------------------------------------------------------------- longest
@pytest.mark.parametrize("unit", ["words", "chars"])
@pytest.mark.parametrize("include_input", [False, True])
def test_longest_is_top_k_by_response_length(pool, unit, include_input):
    def length(r):  # straightforward: the response (and the input) in the unit
        f = (lambda s: len(s.split())) if unit == "words" else len
        return f(r["output"]) + (f(r["input"]) if include_input else 0)

    want = np.array([length(r) for r in pool.rows], dtype=float)
    sel = build_selector("longest", {"unit": unit, "include_input": include_input}).run(
        pool, 0.3, ctx())
    assert np.array_equal(sel.scores, want)
    assert len(sel.indices) == math.ceil(0.3 * len(pool))
    threshold_property(want, sel.indices)
    # ties at the cut are a seeded choice: reproducible for a seed
    again = build_selector("longest", {"unit": unit, "include_input": include_input}).run(pool, 0.3, ctx())
    assert again.indices == sel.indices


def test_longest_tokens_use_the_target_tokenizer(pool, tiny_model_dir, tokenizer):
    want = np.array([len(tokenizer.encode(r["output"], add_special_tokens=False)) for r in pool.rows])
    sel = build_selector("longest", {"unit": "tokens"}).run(pool, 0.25, ctx(target_model=tiny_model_dir))
    assert np.array_equal(sel.scores, want)
    threshold_property(want.astype(float), sel.indices)
    with pytest.raises(ValueError, match="target model"):
        build_selector("longest", {"unit": "tokens"}).run(pool, 0.25, ctx())
    with pytest.raises(ValueError, match="unit must be one of"):
        build_selector("longest", {"unit": "bytes"}).run(pool, 0.25, ctx())


# --------------------------------------------------------------------------- length
def test_length_counts_query_and_response_tokens_of_the_target_tokenizer(pool, tiny_model_dir, tokenizer):
    def query(r):  # 2410.09335's "\nHuman: {q}\nAssistant: ".strip()
        q = r["instruction"] + ("\n" + r["input"] if r["input"] else "")
        return ("\nHuman: " + q + "\nAssistant: ").strip()

    want = np.array([len(tokenizer(query(r))["input_ids"]) + len(tokenizer(r["output"])["input_ids"])
                     for r in pool.rows], dtype=float)
    sel = build_selector("length").run(pool, 0.2, ctx(target_model=tiny_model_dir))
    assert np.array_equal(sel.scores, want)
    threshold_property(want, sel.indices)
    resp = build_selector("length", {"count": "response"}).run(pool, 0.2, ctx(target_model=tiny_model_dir))
    assert np.array_equal(resp.scores, [len(tokenizer(r["output"])["input_ids"]) for r in pool.rows])
    with pytest.raises(ValueError, match="target_model"):
        build_selector("length").run(pool, 0.2, ctx())


# --------------------------------------------------------------------------- perplexity
def test_perplexity_reuses_the_ifd_pass_and_takes_its_bands(pool, tiny_model_dir, tmp_path):
    from selbench.models import load_model, load_tokenizer
    from selbench.selectors.ifd import reference_ifd_scores

    params = {"proxy": tiny_model_dir, "max_length": 64, "batch_size": 8}
    c1 = ctx(tmp_path)
    build_selector("ifd", params).run(pool, 0.3, c1)
    shards = sorted(p.name for p in tmp_path.iterdir())
    (ifd_key,) = c1.shared_work
    assert c1.shared_work[ifd_key]["built_here"]

    # the batch-size-1 reference loop, independent of the batched pass
    tok, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir).eval()
    ref = np.array([r["ppl_cond"] for r in reference_ifd_scores(model, tok, pool.rows, 64)])
    V = len(ref)
    desc = list(np.argsort(-ref, kind="stable"))
    for band, ratio in [("top", 0.25), ("middle", 0.25), ("bottom", 0.25), ("middle", 0.9)]:
        k = math.ceil(ratio * V)
        start = min(int(MIDDLE_START * V), V - k)
        want = {"top": desc[:k], "bottom": desc[V - k:], "middle": desc[start:start + k]}[band]
        c2 = ctx(tmp_path)
        sel = build_selector("perplexity", {**params, "band": band}).run(pool, ratio, c2)
        assert set(sel.indices) == set(int(i) for i in want), band
        np.testing.assert_allclose(sel.scores, ref, rtol=1e-4)
        # the same shards, not a second pass: recorded as shared work built elsewhere
        assert sorted(p.name for p in tmp_path.iterdir()) == shards
        assert list(c2.shared_work) == [ifd_key] and not c2.shared_work[ifd_key]["built_here"]
        assert sel.info["cost"]["shared"][0]["key"] == ifd_key
    with pytest.raises(ValueError, match="band must be one of"):
        build_selector("perplexity", {**params, "band": "median"}).run(pool, 0.2, ctx(tmp_path))


def test_perplexity_leaves_out_rows_without_a_usable_perplexity(tiny_model_dir):
    rows = [{"id": f"r{i}", "instruction": f"say {i}", "input": "", "output": "" if i < 3 else f"word {i} " * i}
            for i in range(10)]
    p = Pool("t", rows, "test")
    sel = build_selector("perplexity", {"proxy": tiny_model_dir, "max_length": 64}).run(p, 1.0, ctx())
    assert not set(sel.indices) & {0, 1, 2} and sel.info["short_by"] == 3


# --------------------------------------------------------------------------- dsir
TEXTS = ["Hello, World! hello world.", "It's 3.5 o'clock -- naïve café; ÉCOLE", "",
         "a b a b a b", "Write a poem about the sea.\n\nThe sea, the sea!"]


def reference_counts(text: str, n: int, buckets: int) -> dict[int, int]:
    """Straight from the definition: lowercase, \\w+|[^\\w\\s]+ tokens, 1..n-grams, sha256."""
    import re

    words = re.findall(r"\w+|[^\w\s]+", text.lower())
    out: dict[int, int] = {}
    grams = list(words) + [" ".join(words[i:i + m]) for m in range(2, n + 1)
                           for i in range(len(words) - m + 1)]
    for g in grams:
        b = int(hashlib.sha256(g.encode("utf-8")).hexdigest(), 16) % buckets
        out[b] = out.get(b, 0) + 1
    return out


def test_dsir_features_match_the_definition_and_the_released_package():
    h = _Hasher(10000)
    for t in TEXTS:
        got = builtin_counts(t, 2, h)
        ref = reference_counts(t, 2, 10000)
        assert {int(i): int(got[i]) for i in np.nonzero(got)[0]} == ref
    if importlib.util.find_spec("data_selection") is None:
        pytest.skip("pip install data-selection to compare with the released featurizer")
    name, feat = featurizer(2, 10000, use_package=True)
    assert name.startswith("data-selection")
    for t in TEXTS:
        assert np.array_equal(feat(t), builtin_counts(t, 2, h))


def brute_force_log_weights(pool_texts, target_texts, buckets=10000):
    raw = [reference_counts(t, 2, buckets) for t in pool_texts]
    tgt = [reference_counts(t, 2, buckets) for t in target_texts]
    pr, pt = np.zeros(buckets), np.zeros(buckets)
    for c in raw:
        for b, v in c.items():
            pr[b] += v
    for c in tgt:
        for b, v in c.items():
            pt[b] += v
    pr, pt = pr / pr.sum(), pt / pt.sum()
    ld = np.log(pt + 1e-8) - np.log(pr + 1e-8)
    return np.array([sum(v * ld[b] for b, v in c.items()) for c in raw])


def test_dsir_weights_and_topk_against_a_brute_force(pool):
    targets = ["alpha beta gamma delta", "kappa lambda mu, alpha beta."]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in pool.rows]
    want = brute_force_log_weights(texts, targets)
    sel = build_selector("dsir", {"target_texts": targets, "sampling": "topk"}).run(pool, 0.25, ctx())
    np.testing.assert_allclose(sel.scores, want, rtol=1e-10, atol=1e-9)
    assert set(sel.indices) == set(np.argsort(-want, kind="stable")[:len(sel.indices)].tolist())


def test_dsir_target_is_the_runs_eval_prompts(pool):
    evals = {"a": [{"id": "1", "prompt": "alpha beta gamma"}], "b": [{"id": "2", "prompt": "mu mu"}]}
    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in pool.rows]
    c = ctx(eval_items=evals)
    sel = build_selector("dsir", {"sampling": "topk"}).run(pool, 0.25, c)
    np.testing.assert_allclose(sel.scores, brute_force_log_weights(texts, ["alpha beta gamma", "mu mu"]),
                               rtol=1e-10, atol=1e-9)
    assert "eval prompts" in c.notes["dsir"]["target"]
    with pytest.raises(ValueError, match="needs the run's eval prompts"):
        build_selector("dsir").run(pool, 0.25, ctx())


def test_dsir_gumbel_top1_samples_in_proportion_to_the_importance_weights():
    logw = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    counts = np.zeros(4)
    for seed in range(4000):
        counts[gumbel_topk(logw, 1, seed)[0]] += 1
    np.testing.assert_allclose(counts / counts.sum(), np.exp(logw), atol=0.03)


def test_dsir_topk_matches_the_released_pipeline(pool, tmp_path):
    if importlib.util.find_spec("data_selection") is None:
        pytest.skip("pip install data-selection to run the released DSIR pipeline")
    from data_selection import HashedNgramDSIR

    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in pool.rows]
    targets = ["alpha beta gamma delta", "kappa lambda mu, alpha beta."]
    raw, tgt = tmp_path / "raw.jsonl", tmp_path / "target.jsonl"
    raw.write_text("".join(json.dumps({"text": t, "i": i}) + "\n" for i, t in enumerate(texts)))
    tgt.write_text("".join(json.dumps({"text": t}) + "\n" for t in targets))
    dsir = HashedNgramDSIR([str(raw)], [str(tgt)], cache_dir=str(tmp_path / "cache"), num_proc=1,
                           min_example_length=0)
    dsir.fit_importance_estimator(num_tokens_to_fit="all")
    dsir.compute_importance_weights()
    k = 6
    dsir.resample(out_dir=str(tmp_path / "out"), num_to_sample=k, cache_dir=str(tmp_path / "rs"), top_k=True)
    theirs = {json.loads(line)["i"] for f in (tmp_path / "out").glob("*.jsonl") for line in f.read_text().splitlines()}
    for feat in ("builtin", "data-selection"):
        c = ctx()
        ours = build_selector("dsir", {"target_texts": targets, "sampling": "topk",
                                       "featurizer": feat}).run(pool, k / len(pool), c)
        assert set(ours.indices) == theirs
        assert c.notes["dsir"]["featurizer"].startswith(feat)


# --------------------------------------------------------------------------- embeddings
def unit_rows(n, d=8, seed=0, dup=()):
    E = np.random.default_rng(seed).normal(size=(n, d))
    for a, b in dup:
        E[b] = E[a]
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def test_kcenter_is_farthest_first_against_a_distance_matrix():
    E = unit_rows(40, dup=[(0, 1), (2, 3)])
    D = np.linalg.norm(E[:, None] - E[None], axis=2)  # brute-force pairwise distances
    for seed in (0, 1):
        order, score = kcenter_greedy(E, 40, seed)
        assert sorted(order) == list(range(40))
        for t in range(1, 40):
            prev = order[:t]
            rest = [i for i in range(40) if i not in prev]
            dist = D[np.ix_(rest, prev)].min(axis=1)
            assert D[order[t], prev].min() == pytest.approx(dist.max(), abs=1e-9)
            assert score[order[t]] == pytest.approx(dist.max(), abs=1e-9)
    assert kcenter_greedy(E, 5, 0)[0] != kcenter_greedy(E, 5, 1)[0]  # the seed picks the start


def test_knn_kde_against_a_brute_force():
    E = unit_rows(30, d=3, dup=[(0, 1), (0, 2)])
    sigma = 0.75
    for K in (1, 4, 30):
        want = []
        for i in range(30):
            d2 = sorted(float(np.sum((E[i] - E[j]) ** 2)) for j in range(30))[:K]
            want.append(sum(max(0.0, 1 - v / sigma ** 2) for v in d2))
        np.testing.assert_allclose(knn_kde(E, K, sigma, chunk=7), want, atol=1e-5)


def test_round_robin_against_a_plain_loop():
    sim = np.random.default_rng(0).random((3, 20))
    used, want = set(), []
    q = 0
    while len(want) < 11:
        j = max((i for i in range(20) if i not in used), key=lambda i: sim[q, i])
        used.add(j)
        want.append(j)
        q = (q + 1) % 3
    assert round_robin(sim, 11, seed=0) == want


def test_embedding_selectors_share_one_embedding_pass_with_ifd_diverse(pool, tiny_model_dir, tmp_path):
    from selbench.embeddings import embed

    texts = [f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in pool.rows]
    E = embed(texts, 64, 512)  # the definition, outside the cache
    c1 = ctx(tmp_path)
    ks = build_selector("kcenter").run(pool, 0.25, c1)
    (key,) = c1.shared_work
    assert key.startswith("shards/embed-") and c1.shared_work[key]["built_here"]
    order, _ = kcenter_greedy(E, len(ks.indices), 0)
    assert ks.indices == order
    c2 = ctx(tmp_path)
    kd = build_selector("knn-density", {"neighbors": 3}).run(pool, 0.25, c2)
    assert not c2.shared_work[key]["built_here"]
    np.testing.assert_allclose(kd.scores, -knn_kde(E, 3, 0.75), atol=1e-5)
    threshold_property(kd.scores, kd.indices)
    c3 = ctx(tmp_path)
    build_selector("ifd-diverse", {"proxy": tiny_model_dir, "max_length": 64}).run(pool, 0.1, c3)
    assert key in c3.shared_work and not c3.shared_work[key]["built_here"]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("embed-")]) == 1
    c4 = ctx(tmp_path)
    et = build_selector("embed-target", {"target_texts": ["alpha beta", "mu lambda"]}).run(pool, 0.25, c4)
    Q = embed(["alpha beta", "mu lambda"], 64, 512)
    assert et.indices == round_robin(Q.astype(float) @ E.astype(float).T, len(et.indices), 0)
    assert not c4.shared_work[key]["built_here"]


# --------------------------------------------------------------------------- judges: own prompts
def test_pairwise_rendering_and_keys_are_unchanged_by_single_prompt_items():
    j = RefSimJudge("refsim", RefSimConfig())
    it = JudgeItem("q", "a", "b", "ref")
    assert j.messages(it) == render("q", "a", "b", j.prompt)
    blob = json.dumps([j.cache_identity(), "q", "a", "b", "ref"], sort_keys=True)
    assert item_key(j, it) == hashlib.sha256(blob.encode()).hexdigest()
    own = JudgeItem("", "", "", messages=[{"role": "user", "content": "rate"}])
    assert item_key(j, own) != item_key(j, JudgeItem("", "", "", messages=[{"role": "user", "content": "rate!"}]))
    with pytest.raises(NotPromptable, match="not an LLM"):
        j.complete_many([own], lambda i, c: None)


@dataclass
class FakeRaterConfig:
    model: str = "fake-rater"


class FakeRater(Judge):
    """Test double: rates a row by a fixed rule on its text, and counts its calls."""

    config_cls = FakeRaterConfig
    registry_name = "fake-rater"

    def __init__(self):
        super().__init__("fake", FakeRaterConfig())
        self.seen: list[list[dict]] = []

    @staticmethod
    def rating(user: str) -> str:
        n = len(user) % 7
        return {0: "5\nperfect", 1: "4.5\ngood", 2: "Score: 4", 3: "3.5", 4: "no idea",
                5: "4.5", 6: "7\nout of range"}[n]

    def complete_many(self, items, on_done):
        for i, it in enumerate(items):
            msgs = self.messages(it)
            self.seen.append(msgs)
            self.stats["calls"] += 1
            on_done(i, Completion(self.rating(msgs[-1]["content"])))


def test_alpagasus_prompt_parse_and_threshold_against_a_brute_force(pool, tmp_path):
    r = pool.rows[0]
    msgs = rating_messages(r)
    assert msgs[0] == {"role": "system", "content": "We would like to request your feedback on the "
                       "performance of AI assistant in response to the instruction and the given "
                       "input displayed following."}
    assert msgs[1]["content"].startswith(f"###Instruction:\n{r['instruction']}\n\n### Input:\n"
                                         f"{r['input']}\n\n### Response:\n{r['output']}\n\nPlease rate "
                                         f"according to the accuracy")
    assert [parse_rating(t) for t in ("5\nx", " 4.5 \nwhy", "Score: 4", "The score: 3.5 because",
                                      "no idea", "7", "", None)] == [5, 4.5, 4, 3.5, None, None, None, None]

    judge = FakeRater()
    want = np.array([v if (v := parse_rating(FakeRater.rating(rating_messages(x)[1]["content"]))) is not None
                     else np.nan for x in pool.rows])
    c1 = ctx(tmp_path, judges={"fake": judge})
    sel = build_selector("alpagasus").run(pool, 1.0, c1)
    np.testing.assert_array_equal(sel.scores, want)
    kept = {i for i in range(len(pool)) if want[i] >= 4.5}
    assert set(sel.indices) == kept and sel.info["short_by"] == len(pool) - len(kept)
    assert [want[i] for i in sel.indices] == sorted((want[i] for i in kept), reverse=True)
    assert judge.stats["calls"] == len(pool) and c1.notes["judge_calls_made"] == len(pool)
    (key,) = c1.shared_work
    assert c1.shared_work[key]["judge_calls"] == len(pool) and sel.info["cost"]["judge_calls"] == len(pool)
    # cached per row: another ratio and the top-k mode make no new call
    c2 = ctx(tmp_path, judges={"fake": judge})
    top = build_selector("alpagasus", {"mode": "topk"}).run(pool, 0.25, c2)
    assert judge.stats["calls"] == len(pool) and c2.notes["judge_calls_made"] == 0
    assert not c2.shared_work[key]["built_here"]
    threshold_property(np.nan_to_num(want, nan=-1.0), top.indices)


def test_alpagasus_refuses_the_offline_judge_in_the_run_and_in_the_plan(pool):
    off = {"offline-refsim-minilm": RefSimJudge("offline-refsim-minilm", RefSimConfig())}
    with pytest.raises(ValueError, match="not an LLM"):
        build_selector("alpagasus").run(pool, 0.5, ctx(judges=off))
    probs = build_selector("alpagasus").plan_problems(off)
    assert probs and probs[0][0] == "error" and "not an LLM" in probs[0][1]
    assert build_selector("alpagasus", {"judge": "hf-smollm2"}).plan_problems(off) == []
    with pytest.raises(ValueError, match="needs a judge"):
        build_selector("alpagasus").run(pool, 0.5, ctx())


def test_alpagasus_is_planned_and_costed(tmp_path):
    sel = build_selector("alpagasus", {"judge": "gpt-5.1"})
    sel.plan_problems({})
    est = sel.estimate(1000, 150.0)
    assert est["judge_calls"] == 1000 and est["cost_usd"] > 0 and "gpt-5.1" in est["shared"]
    # 1000 x (260 prompt tokens x $1.25 + 120 completion tokens x $10) / 1e6
    assert est["cost_usd"] == pytest.approx(1000 * (260 * 1.25 + 120 * 10.0) / 1e6)


# --------------------------------------------------------------------------- the real data
@pytest.mark.slow
def test_longest_on_full_alpaca_versus_the_published_1k_longest(data_dir, tokenizer):
    """Long Is More's released 1k-longest is not a top-1,000 by response length in any unit
    tried: the README and longest.py say so with these numbers."""
    from selbench.data import content_id, load_pool

    rows = json.loads((data_dir / "train" / "alpaca_data.json").read_text())
    idx = json.loads((data_dir / "published_selections" / "alpaca_selection_indices.json").read_text())
    pub = set(idx["selections"]["long_is_more_alpaca_1k_longest"]["alpaca_indices"])
    pub_ids = {content_id(rows[i]["instruction"], rows[i]["input"], rows[i]["output"]) for i in pub}
    pool = load_pool("alpaca", str(data_dir))  # 51,974 rows: the 28 empty outputs are skipped
    assert len(rows) == 52002 and len(pool) == 52002 - pool.skipped["empty_output"]
    overlap = {}
    for unit in ("words", "chars"):
        sel = build_selector("longest", {"unit": unit}).run(pool, 1000 / len(pool), ctx())
        assert len(sel.indices) == 1000
        overlap[unit] = len({pool.rows[i]["id"] for i in sel.indices} & pub_ids)
        # independent: from a plain sort of the raw file, the overlap any tie rule can give
        L = np.array([len(r["output"].split()) if unit == "words" else len(r["output"]) for r in rows])
        kth = np.sort(L)[::-1][999]
        strict, tied = set(np.flatnonzero(L > kth).tolist()), set(np.flatnonzero(L == kth).tolist())
        need = 1000 - len(strict)
        lo = len(strict & pub) + max(0, need - len(tied - pub))
        hi = len(strict & pub) + min(need, len(tied & pub))
        assert lo <= overlap[unit] <= hi
        overlap[unit] = (lo, hi)
    # words: no choice at the cut (981 longer, 19 tied for 19 places); chars: 3 tied for 1 place
    assert overlap == {"words": (933, 933), "chars": (857, 858)}
    # no ranking by response length reproduces it: rows left out that are longer than some
    # published row in characters, words and SmolLM2 tokens at once
    C = np.array([len(r["output"]) for r in rows])
    W = np.array([len(r["output"].split()) for r in rows])
    T = np.array([len(x) for x in tokenizer([r["output"] for r in rows], add_special_tokens=False)["input_ids"]])
    P = np.array(sorted(pub))
    out = np.setdiff1d(np.arange(len(rows)), P)
    dominating = sum(bool(np.any((C[x] > C[P]) & (W[x] > W[P]) & (T[x] > T[P]))) for x in out)
    assert dominating == 242
