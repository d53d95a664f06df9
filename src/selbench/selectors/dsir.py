"""DSIR: importance resampling on hashed n-grams toward a target (arXiv 2302.03169).

As p-lambda/dsir's ``HashedNgramDSIR`` (PyPI ``data-selection`` 1.0.3,
``data_selection/hashed_ngram_dsir.py`` and ``base.py``):

- features: the text lowercased, split by NLTK's WordPunctTokenizer (the regex
  ``\\w+|[^\\w\\s]+``); every unigram and every bigram (the two words joined by one space) is
  hashed into ``num_buckets`` = 10,000 buckets by ``int(sha256(utf-8).hexdigest(), 16) %
  num_buckets`` and counted;
- p_raw = the bucket counts summed over the pool, normalised; p_target = the same over the
  target texts, plus ``target_laplace_smoothing`` per bucket, normalised;
- log importance weight of a row = features . (log(p_target + 1e-8) - log(p_raw + 1e-8));
- resampling without replacement by the Gumbel top-k trick: the top k of log weight + a
  Gumbel(0, 1) draw per row (``sampling: topk`` takes the top k of the weights instead).

Targets (``target``): ``eval`` = the run's eval prompts (every eval set of the run, one
distribution), or a registered eval set name (``koala``, ...) or a ``.jsonl`` file of
prompts (a ``prompt`` / ``instruction`` / ``question`` / ``text`` field per row);
``target_texts`` gives the texts inline instead. Pool text (``text``): ``all`` =
``instruction\\ninput\\noutput`` (the whole example, as DSIR featurizes whole documents) or
``prompt`` = ``instruction\\ninput``.

The features come from a built-in copy of that definition (``featurizer: builtin``, the
default: the same counts, with each distinct n-gram hashed once, ~4x faster on Alpaca) or
from ``data_selection``'s own ``get_ngram_counts`` (``featurizer: data-selection``; ``pip
install data-selection``, the ``dsir`` extra). tests/test_baselines.py checks that both give
identical counts and that the released pipeline (``HashedNgramDSIR``, top-k) selects the same
rows; the info says which featurizer ran.
Differences from the released code: the Gumbel draws come from a generator seeded by the
run seed (theirs: NumPy's global generator, unseeded), so a selection is reproducible; the
minimum-length filter (``min_example_length``, 100 words in the release, meant for Pile
documents, which would drop most Alpaca rows) defaults to 0 here; the pool is read in
memory rather than from sharded files (same counts); ties of the perturbed keys (which do
not occur in practice) follow selbench's seeded tie-break.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import time
from dataclasses import dataclass

import numpy as np

from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget, rank_by_score
from .targets import target_identity, target_prompts

_WORDPUNCT = re.compile(r"\w+|[^\w\s]+", re.UNICODE | re.MULTILINE | re.DOTALL)
TEXTS = ("all", "prompt")
SAMPLING = ("gumbel", "topk")


@dataclass
class DSIRConfig(SelectorConfig):
    target: str = "eval"
    """eval (the run's eval prompts) | a registered eval set name | a .jsonl file of prompts."""
    target_texts: list[str] | None = None
    """Target texts given inline (instead of ``target``)."""
    text: str = "all"
    """Pool text featurized: all (instruction, input, output) | prompt (instruction, input)."""
    ngrams: int = 2
    num_buckets: int = 10000
    target_laplace_smoothing: float = 0.0
    min_example_length: int = 0
    """Rows with fewer words are never selected (the release: 100, for Pile documents)."""
    sampling: str = "gumbel"
    """gumbel (importance resampling without replacement) | topk (top k by weight)."""
    featurizer: str = "builtin"
    """builtin (the same counts, faster) | data-selection (the PyPI package's own function)."""


def wordpunct(text: str) -> list[str]:
    return _WORDPUNCT.findall(text)


class _Hasher:
    """sha256 bucket of a string, memoised (the same value as hashing it every time)."""

    def __init__(self, num_buckets: int):
        self.num_buckets = num_buckets
        self.memo: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        b = self.memo.get(s)
        if b is None:
            b = int(hashlib.sha256(s.encode("utf-8")).hexdigest(), 16) % self.num_buckets
            self.memo[s] = b
        return b


def builtin_counts(text: str, n: int, hasher: _Hasher) -> np.ndarray:
    """Hashed 1..n-gram counts of one text (data_selection's ``get_ngram_counts``)."""
    words = wordpunct(text.lower())
    counts = np.zeros(hasher.num_buckets, dtype=np.int64)
    for w in words:
        counts[hasher(w)] += 1
    for m in range(2, n + 1):
        for i in range(len(words) - m + 1):
            counts[hasher(" ".join(words[i:i + m]))] += 1
    return counts


FEATURIZERS = ("builtin", "data-selection")


def featurizer(n: int, num_buckets: int, use_package: bool = False):
    """(name, function text -> counts): the built-in one, or data_selection's own."""
    if use_package:
        if importlib.util.find_spec("data_selection") is None:
            raise ValueError("dsir: featurizer 'data-selection' needs `pip install data-selection` "
                             "(the dsir extra: pip install -e '.[dsir]'); featurizer 'builtin' "
                             "computes the same counts without it")
        from data_selection.hashed_ngram_dsir import get_ngram_counts  # lazy: heavy (nltk)
        import data_selection  # lazy: heavy (nltk)

        return (f"data-selection {data_selection.__version__}",
                lambda t: np.asarray(get_ngram_counts(t, n=n, num_buckets=num_buckets), np.int64))
    hasher = _Hasher(num_buckets)
    return "builtin", lambda t: builtin_counts(t, n, hasher)


def pool_text(row: dict, text: str) -> str:
    if text == "prompt":
        return f"{row['instruction']}\n{row['input']}" if row.get("input") else row["instruction"]
    return f"{row['instruction']}\n{row.get('input', '') or ''}\n{row['output']}"


def sparse(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(buckets, counts) of the non-zero buckets of one dense count vector."""
    nz = np.nonzero(counts)[0]
    return nz.astype(np.int32), counts[nz].astype(np.int64)


def log_importance_weights(raw: list[tuple[np.ndarray, np.ndarray]],
                           target: list[tuple[np.ndarray, np.ndarray]], num_buckets: int,
                           laplace: float = 0.0) -> np.ndarray:
    """Per raw row: counts . (log p_target - log p_raw), with DSIR's 1e-8 guards (rows as
    sparse (buckets, counts): a dense 52k x 10k matrix would take 4 GB)."""
    def total(rows):
        out = np.zeros(num_buckets, np.float64)
        for b, c in rows:
            np.add.at(out, b, c)
        return out

    p_raw = total(raw)
    p_raw = p_raw / p_raw.sum() if p_raw.sum() else p_raw
    p_t = total(target) + laplace
    p_t = p_t / p_t.sum()
    log_diff = np.log(p_t + 1e-8) - np.log(p_raw + 1e-8)
    return np.array([float(c @ log_diff[b]) for b, c in raw], dtype=np.float64)


def gumbel_topk(logw: np.ndarray, k: int, seed: int, keep: np.ndarray | None = None) -> list[int]:
    """k rows drawn without replacement with probability proportional to exp(logw) (the
    Gumbel top-k trick, seeded), among ``keep``."""
    keys = np.asarray(logw, np.float64) + np.random.default_rng([seed, 0xD51]).gumbel(size=len(logw))
    keep = np.ones(len(logw), bool) if keep is None else keep
    return [int(i) for i in rank_by_score(np.where(keep, keys, np.nan), seed) if keep[i]][:k]


@SELECTORS.register("dsir")
class DSIR(Selector):
    """Importance resampling toward the target's hashed unigram+bigram distribution."""

    config_cls = DSIRConfig
    description = "DSIR: hashed n-gram importance resampling toward the eval prompts (or a target file)"
    paper_name = "DSIR"
    reference = "arXiv 2302.03169; p-lambda/dsir (PyPI data-selection 1.0.3)"
    family = "baseline"
    report_rank = 5
    needs = ("target",)
    cost_class = "cpu-seconds"

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"target_texts": ["alpha beta gamma delta", "kappa lambda mu, alpha beta."]}

    def _check(self) -> None:
        c = self.config
        if c.text not in TEXTS:
            raise ValueError(f"dsir: text must be one of {', '.join(TEXTS)}, got {c.text!r}")
        if c.sampling not in SAMPLING:
            raise ValueError(f"dsir: sampling must be one of {', '.join(SAMPLING)}, got {c.sampling!r}")
        if c.featurizer not in FEATURIZERS:
            raise ValueError(f"dsir: featurizer must be one of {', '.join(FEATURIZERS)}, got {c.featurizer!r}")
        if c.ngrams < 1 or c.num_buckets < 1:
            raise ValueError("dsir: ngrams and num_buckets must be >= 1")

    def context_identity(self, ctx: SelectionContext) -> dict:
        return target_identity(self.config.target, self.config.target_texts, ctx)

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        self._check()
        c = self.config
        t0 = time.perf_counter()
        targets, where = target_prompts(c.target, c.target_texts, ctx, "dsir")
        name, feat = featurizer(c.ngrams, c.num_buckets, c.featurizer == "data-selection")
        raw = [sparse(feat(pool_text(r, c.text))) for r in pool.rows]
        tgt = [sparse(feat(t)) for t in targets]
        logw = log_importance_weights(raw, tgt, c.num_buckets, c.target_laplace_smoothing)
        # DSIR's per-example length: (sum of counts + n(n-1)/2) // n = the number of words
        rem = c.ngrams * (c.ngrams - 1) // 2
        self._length = np.array([(int(cn.sum()) + rem) // c.ngrams for _, cn in raw], np.int64)
        ctx.notes["dsir"] = {"featurizer": name, "target": where, "target_texts": len(targets),
                             "seconds": time.perf_counter() - t0}
        return logw

    def select(self, pool, ratio, ctx, scores=None) -> Selection:
        self._check()
        c = self.config
        k = budget(ratio, len(pool))
        logw = self.score(pool, ctx)  # also the per-row lengths of the length filter
        keep = self._length >= c.min_example_length
        if c.sampling == "gumbel":
            chosen = gumbel_topk(logw, k, ctx.seed, keep)
        else:
            chosen = [int(i) for i in rank_by_score(np.where(keep, logw, np.nan), ctx.seed)
                      if keep[i]][:k]
        info = {"budget": k, "sampling": c.sampling,
                "filter_report": f"DSIR toward {ctx.notes['dsir']['target']}: "
                                 f"{c.sampling} over {int(keep.sum())} rows"}
        if len(chosen) < k:
            info["short_by"] = k - len(chosen)
        return Selection(chosen, logw, info)
