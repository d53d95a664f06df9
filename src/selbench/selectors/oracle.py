"""Positive controls on a pool with planted corruption (:mod:`selbench.corrupt`).

- ``oracle-clean`` scores 1 for every row the corruption record calls clean and 0 for the
  corrupted ones: at any ratio up to the clean share it selects clean rows only (ties among
  them broken by the seeded key, as for every selector).
- ``oracle-corrupt`` (the anti-oracle) scores the other way round: corrupted rows first,
  then clean ones.

A study on a corrupted pool that cannot tell these two apart (their difference's CI
includes 0) has no power at its scale. The record is ``selector_params.record`` or, by
default, the ``<stem>.corruption.json`` next to the pool file (``bench run --pool
corrupted.json --selector oracle-clean`` finds it by itself); rows are matched by content
id, so a seeded sample of the pool (``data.pool_size``) works too, and a row the record does
not know is an error. ``test_record`` (contract tests only) calls every third row corrupted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..corrupt import CLEAN, find_record
from .base import SELECTORS, SelectionContext, Selector, SelectorConfig


@dataclass
class OracleConfig(SelectorConfig):
    record: str | None = None
    """The corruption record (default: <pool file stem>.corruption.json next to the pool)."""
    test_record: bool = False
    """Contract tests only: every third pool row counts as corrupted (no record needed)."""


class _Oracle(Selector):
    config_cls = OracleConfig
    family = "control"
    cost_class = "free"
    keep_clean = True

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"test_record": True}

    def context_identity(self, ctx: SelectionContext) -> dict:
        """A record file named in the config is keyed by its content (an edited record
        re-selects); a record the pool carries is part of the pool's rows already."""
        if not self.config.record:
            return {}
        try:
            digest = hashlib.sha256(Path(self.config.record).expanduser().read_bytes()).hexdigest()[:16]
        except OSError:
            digest = "unreadable"  # the selection then fails with the record's own error
        return {"record_sha": digest}

    def corrupted(self, pool) -> np.ndarray:
        """True for the pool's corrupted rows."""
        if self.config.test_record:
            return np.arange(len(pool)) % 3 == 0
        rec = find_record(pool, self.config.record, who=self.name)
        return np.array([k != CLEAN for k in rec.kinds_of(pool)], dtype=bool)

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        bad = self.corrupted(pool)
        ctx.notes["corrupted_in_pool"] = int(bad.sum())
        return np.where(bad, 0.0, 1.0) if self.keep_clean else np.where(bad, 1.0, 0.0)


@SELECTORS.register("oracle-clean", "oracle")
class OracleClean(_Oracle):
    """Positive control: the clean rows first (drops the planted corruption)."""

    paper_name = "Oracle (clean rows)"
    description = "positive control on a corrupted pool: clean rows first (from its record)"
    report_rank = 97


@SELECTORS.register("oracle-corrupt", "anti-oracle")
class OracleCorrupt(_Oracle):
    """Negative end of the positive control: the corrupted rows first."""

    paper_name = "Anti-oracle (corrupted rows)"
    description = "positive control on a corrupted pool: corrupted rows first (from its record)"
    report_rank = 98
    keep_clean = False
