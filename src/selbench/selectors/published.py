"""Published Alpaca subsets as selectors: ``published:<entry>``.

Each entry of ``published_selections/alpaca_selection_indices.json`` (in the data dir) lists
0-based positions in ``train/alpaca_data.json`` of a subset a paper or repository released
(Cherry IFD 5%, AlpaGasus-unofficial, Long-Is-More, CaR, Dataset Quantization, ...). The
selector maps those positions to pool rows by content id (:func:`selbench.data.content_id`
of instruction, input, output), so it is only valid with pool ``alpaca`` (the same rows);
with a sampled pool (``data.pool_size``) it takes the intersection of the published subset
and the sample and reports it (``published_in_pool`` of ``published_size``).

Budget: like any selector, the top ``ceil(ratio * N)`` of the pool, in the published
file's order; when the (intersected) published subset is smaller, the selection is the
whole of it and ``short_by`` says by how much (never padded). At a ratio at or above the
published size, the selection is exactly the published subset (e.g. Cherry's 3,111 rows =
5.98% of 52,002: ``--ratio 0.06``). Scores: 1 for published rows, 0 otherwise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import DataNotFound, content_id, resolve_data_dir
from .base import SELECTORS, Selection, SelectionContext, Selector, SelectorConfig, budget

INDEX_FILE = "published_selections/alpaca_selection_indices.json"
ALPACA_FILE = "train/alpaca_data.json"

# short name -> entry key in the index file
ENTRIES = {
    "cherry-ifd-5pct": "cherry_llm_ifd_alpaca_5_percent",
    "superfiltering-fork-10pct": "superfiltering_fork_kmeans_hybrid_10per",
    "alpagasus-claude-t45": "alpagasus_unofficial_claude_t45",
    "alpagasus-helpfulness-t45": "alpagasus_unofficial_helpfulness_t45",
    "alpagasus-random-9k": "alpagasus_unofficial_random_9k",
    "long-is-more-1k-longest": "long_is_more_alpaca_1k_longest",
    "long-is-more-1k-score": "long_is_more_alpaca_1k_score",
    "car-1013": "car_selected_latest_1013",
    "car-v1-1048": "car_selected_v1_1048",
    "dq-k5-1k": "dq_k5_1k",
    "dq-k5-5k": "dq_k5_5k",
    "dq-random-1k": "dq_random_1k",
    "dq-random-5k": "dq_random_5k",
    "alpaca-pr152-5000": "stanford_alpaca_pr152_alpaca_5000",
}


@dataclass
class PublishedConfig(SelectorConfig):
    index_file: str | None = None
    """Index JSON (default: <data dir>/published_selections/alpaca_selection_indices.json)."""
    alpaca_file: str | None = None
    """The Alpaca 52k file the positions refer to (default: <data dir>/train/alpaca_data.json)."""
    require_pool: str | None = "alpaca"
    """Pool name the selection is valid for (None: skip the check, e.g. for a custom pool
    file that contains Alpaca rows)."""
    test_entry: bool = False
    """Contract tests only: the entry is every third pool row (no files needed)."""


_CACHE: dict[tuple, list[str]] = {}


def published_ids(entry: str, index_file: Path, alpaca_file: Path) -> tuple[list[str], dict]:
    """Content ids of the entry's rows, in the published order, and the entry's metadata."""
    key = (entry, str(index_file), str(alpaca_file))
    index = json.loads(Path(index_file).read_text())["selections"]
    if entry not in index:
        raise ValueError(f"published selection '{entry}' is not in {index_file} "
                         f"(entries: {', '.join(sorted(index))})")
    meta = {k: v for k, v in index[entry].items() if k != "alpaca_indices"}
    if key not in _CACHE:
        rows = json.loads(Path(alpaca_file).read_text(encoding="utf-8"))
        ids = []
        for pos in index[entry]["alpaca_indices"]:
            r = rows[pos]
            inp = r.get("input") or ""
            ids.append(content_id(r["instruction"], inp, r["output"]))
        _CACHE[key] = ids
    return list(_CACHE[key]), meta


class Published(Selector):
    config_cls = PublishedConfig
    entry: str = ""
    family = "published"
    report_rank = 90

    @classmethod
    def test_params(cls, tiny_model: str) -> dict:
        return {"require_pool": None, "test_entry": True}

    def _files(self, ctx: SelectionContext) -> tuple[Path, Path]:
        dd = resolve_data_dir(ctx.data_dir)
        idx = Path(self.config.index_file) if self.config.index_file else (dd / INDEX_FILE if dd else None)
        alp = Path(self.config.alpaca_file) if self.config.alpaca_file else (dd / ALPACA_FILE if dd else None)
        if idx is None or not idx.exists() or alp is None or not alp.exists():
            raise DataNotFound(f"{self.name}: needs {INDEX_FILE} and {ALPACA_FILE} under the "
                               f"data dir (--data-dir or SELBENCH_DATA_DIR), or "
                               f"selector_params.index_file / alpaca_file")
        return idx, alp

    def score(self, pool, ctx: SelectionContext) -> np.ndarray:
        return self.select(pool, 1.0, ctx).scores

    def select(self, pool, ratio: float, ctx: SelectionContext, scores=None) -> Selection:
        if self.config.require_pool and pool.name != self.config.require_pool:
            raise ValueError(f"{self.name} is a subset of the '{self.config.require_pool}' pool; "
                             f"the run's pool is '{pool.name}' (positions would not mean the "
                             f"same rows)")
        k = budget(ratio, len(pool))
        if self.config.test_entry:
            ids, meta = [r["id"] for r in pool.rows[::3]], {"description": "test entry"}
        else:
            idx, alp = self._files(ctx)
            ids, meta = published_ids(self.entry, idx, alp)
        pos = {rid: i for i, rid in enumerate(pool.ids)}
        inter = [pos[i] for i in ids if i in pos]
        chosen = inter[:k]
        scores = np.zeros(len(pool))
        scores[inter] = 1.0
        info = {"budget": k, "published_entry": self.entry, "published_size": len(ids),
                "published_in_pool": len(inter), "published_source": meta.get("source_repo"),
                "published_commit": meta.get("source_commit"),
                "filter_report": f"published {self.entry}: {len(inter)} of {len(ids)} rows in "
                                 f"this pool of {len(pool)}; selected {len(chosen)}"}
        if len(chosen) < k:
            info["short_by"] = k - len(chosen)
        if len(inter) > k:
            info["truncated_from"] = len(inter)
        ctx.notes["published_in_pool"] = len(inter)
        return Selection([int(i) for i in chosen], scores, info)


def _register() -> None:
    for short, entry in ENTRIES.items():
        cls = type(f"Published_{short.replace('-', '_')}", (Published,),
                   {"entry": entry, "description": f"published Alpaca subset '{entry}' "
                                                   f"(from {INDEX_FILE})"})
        SELECTORS.add(f"published:{short}", cls, f"published:{entry}")


_register()
