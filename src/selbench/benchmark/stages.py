"""The data of a run and the keys of its stages: below both the :class:`~.pipeline.Pipeline`
(which computes the stages) and the plan (which only looks at them).

Stage keys (folders under ``runs/<experiment>/``, see :mod:`selbench.runs`):

    select/<selector>-r<ratio>-s<seed>-<h8>   selector identity (config + code), ratio, seed, pool
    profiles/<proxy>-<h8>                     (inside proxy selectors) proxy config, pool
    train/full-<h8> | train/<select key>-<h8> resolved training recipe, model, exact subset ids
    generate/<train key>-<h8>                 answer-relevant generate settings, eval prompts
    refnll/<train key>-<h8>                   template, reference prompts, train key
    judge/<judge>/<A>__vs__<B>-<h8>           judge identity, both generate keys

The full-data model depends only on (pool, model, training recipe): it is trained once and
reused by every selector and ratio that compares against it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, RunConfig, resolved_train, stable_hash, to_dict
from ..corrupt import apply_corruption
from ..data import DataNotFound, Pool, eval_set_name, load_eval_set, load_pool
from ..runs import StageKey, stage_key
from ..selectors.base import SelectionContext
from .generate import generate_cache_config

REFNLL_VERSION = 1
REF_SETS = ("wizardlm", "vicuna", "koala")  # every eval set with reference answers
REFNLL_MAX_LENGTH = 1024


@dataclass
class RunData:
    """The pool and eval prompts of one run config, loaded once."""

    pool_arg: str  # data.pool as configured (a known name, a path or a hub id)
    pool: Pool
    evals: dict[str, list[dict]]
    references: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def pool_key(self) -> dict:
        """What identifies the pool content in every stage key that depends on it."""
        return {"pool": self.pool_arg, "source": Path(self.pool.source).name,
                "fingerprint": self.pool.fingerprint(), "n": len(self.pool)}

    def pool_record(self, cfg: RunConfig) -> dict:
        """What a select stage records about the pool it selected from (so that ``bench
        export`` rebuilds exactly that pool, whatever later runs used): the data config,
        the source file, the sample, the skip counts and the fingerprint."""
        return {"data": to_dict(cfg.data), "source": self.pool.source,
                "fingerprint": self.pool.fingerprint(), "n": len(self.pool),
                "sampled_from": self.pool.sampled_from, "skipped": dict(self.pool.skipped)}

    @classmethod
    def of(cls, evals: dict[str, list[dict]], rows: list[dict] | None = None) -> "RunData":
        """Data from Python objects: eval items (and optionally pool rows)."""
        rows = rows or [{"id": "0", "instruction": "-", "input": "", "output": "-"}]
        return cls("python", Pool("python", rows, "python"), evals,
                   {es: [it for it in its if it.get("reference")] for es, its in evals.items()
                    if any(it.get("reference") for it in its)})

    def describe(self) -> list[str]:
        lines = [f"pool '{self.pool_arg}': {self.pool.describe()}"]
        if self.pool.note:
            lines.append(f"NOTE: {self.pool.note}")
        lines.append("eval sets: " + ", ".join(f"{k} ({len(v)})" for k, v in self.evals.items()))
        return lines


def load_run_data(cfg: RunConfig) -> RunData:
    """Load the pool and eval sets of ``cfg`` (errors name the file, row and field)."""
    d = cfg.data
    pool = load_pool(d.pool, d.data_dir, d.pool_size, d.sample_seed, d.columns)
    if d.corrupt:
        pool = apply_corruption(pool, d.corrupt)
    evals = {eval_set_name(es): load_eval_set(es, d.data_dir, d.eval_limit) for es in d.eval_sets}
    if len(evals) != len(d.eval_sets):
        raise ConfigError(f"data.eval_sets {d.eval_sets}: two sets share a name")
    refs = {}
    ref_sets = d.reference_sets if d.reference_sets is not None else [*evals, *REF_SETS]
    for es in dict.fromkeys(ref_sets):
        try:
            items = evals[es] if es in evals else load_eval_set(es, d.data_dir, d.eval_limit)
        except DataNotFound:
            continue
        items = [it for it in items if it.get("reference")]
        if items:
            refs[es] = items
    return RunData(d.pool, pool, evals, refs)


def subset_fingerprint(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def train_processes(cfg: RunConfig) -> int:
    """Processes the train stage runs as (under the launcher, or 1)."""
    la = cfg.launch
    return la.num_processes if la.launcher != "none" and "train" in la.stages else 1


class Stages:
    """Stage keys of one run config on its loaded data and device."""

    def __init__(self, cfg: RunConfig, data: RunData, device: str):
        self.cfg, self.data, self.device = cfg, data, device

    @property
    def pool_hash(self) -> str:
        """The pool's identity as selectors see it (``SelectionContext.pool_key``)."""
        return stable_hash(self.data.pool_key, n=16)

    def selection_inputs(self, selector) -> dict:
        """What the selection reads from this run besides the pool (the target model, the
        eval prompts, a target file, a judge: ``Selector.context_identity``)."""
        ctx = SelectionContext(seed=self.cfg.seed, data_dir=self.cfg.data.data_dir,
                               eval_items=self.data.evals, target_model=self.cfg.model,
                               judges={name: None for name in self.cfg.judges})
        return selector.context_identity(ctx)

    def select_key(self, selector, ratio: float) -> StageKey:
        extra = self.selection_inputs(selector)  # {} for most: their keys stay as they were
        return stage_key("select", f"{selector.name}-r{ratio:g}-s{self.cfg.seed}",
                         selector.cache_config(), ratio, self.cfg.seed, self.data.pool_key,
                         *([extra] if extra else []))

    def train_rows(self, indices: list[int] | None) -> list[dict]:
        rows = self.data.pool.rows
        return rows if indices is None else [rows[i] for i in sorted(indices)]

    def train_identity(self) -> dict:
        """Every resolved quantity that changes the trained weights (see
        :func:`selbench.config.resolved_train`)."""
        return resolved_train(self.cfg.train, train_processes(self.cfg), self.device)

    def train_key(self, name: str, indices: list[int] | None) -> StageKey:
        rows = self.train_rows(indices)
        if indices is not None and len(rows) == len(self.data.pool):
            name = "full"  # the subset is the whole pool: reuse the full-data model
        return stage_key("train", name, self.train_identity(), self.cfg.model,
                         subset_fingerprint([r["id"] for r in rows]))

    def template(self) -> str:
        return self.cfg.generate.template or self.cfg.train.template

    def generate_key(self, train_key: StageKey) -> StageKey:
        sets = {k: [it["id"] for it in v] for k, v in self.data.evals.items()}
        # what can change the answers (memory settings left out), resolved on this device
        return stage_key("generate", train_key.key,
                         generate_cache_config(self.cfg.generate, self.device),
                         self.template(), sets, train_key.digest)

    def refnll_key(self, train_key: StageKey) -> StageKey:
        sets = {k: [it["id"] for it in v] for k, v in self.data.references.items()}
        return stage_key("refnll", train_key.key,
                         {"template": self.template(), "max_length": self.cfg.data.reference_max_length,
                          "version": REFNLL_VERSION}, sets, train_key.digest)

    @staticmethod
    def judge_key(judge, gen_a: StageKey, gen_b: StageKey) -> StageKey:
        return stage_key(f"judge/{judge.name}", f"{gen_a.name}__vs__{gen_b.name}",
                         judge.cache_identity(), gen_a.digest, gen_b.digest)

    def setting(self, full_gen: StageKey) -> dict:
        """What a Table 1 cell holds fixed besides selector and ratio: pool content, target
        model, resolved training recipe, generate settings, eval prompts and the full-data
        baseline."""
        cfg = self.cfg
        return {"pool": self.data.pool_key, "model": cfg.model, "train": self.train_identity(),
                "generate": generate_cache_config(cfg.generate, self.device),
                "eval": {k: len(v) for k, v in self.data.evals.items()}, "baseline": full_gen.key}

    def setting_desc(self) -> str:
        cfg, t = self.cfg, self.cfg.train
        ident = self.train_identity()
        evals = ", ".join(f"{k} {len(v)}" for k, v in self.data.evals.items())
        return (f"experiment {cfg.experiment}; pool {cfg.data.pool} n={len(self.data.pool)}; "
                f"{cfg.model} {t.method} lr={t.learning_rate:g} epochs={t.epochs:g} "
                f"batch={ident['effective_batch']} {ident['precision']} len={t.max_length}; "
                f"{cfg.generate.backend} {cfg.generate.max_new_tokens} new tokens; {evals}")
