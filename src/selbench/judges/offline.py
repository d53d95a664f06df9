"""Offline reference-similarity judge (NOT an LLM judge).

Scores each answer by the cosine similarity of its all-MiniLM-L6-v2 embedding to the
eval set's reference answer (gpt-3.5-turbo answers shipped with the data), mapped to
1-10: score = round(1 + 9 * max(0, cos), 1). It writes its verdict in the same format an
LLM judge uses ("s1 s2" on the first line), so the whole pipeline (cache, parser, W/T/L,
PWS) runs unchanged on a CPU with no server. It is order-independent by construction and
measures closeness to a reference, not quality: its name says so in every output.
Items without a reference answer get an unparseable completion (counted as unparsed).
It cannot complete a prompt of its own (an item with ``messages``, e.g. an AlpaGasus rating
of a pool row): that raises :class:`~.base.NotPromptable`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..embeddings import embed, minilm_dir
from .base import JUDGE_TYPES, Completion, Judge, JudgeItem, StopRequests


@dataclass
class RefSimConfig:
    embedder: str = "all-MiniLM-L6-v2"
    batch_size: int = 64


@JUDGE_TYPES.register("offline-refsim")
class RefSimJudge(Judge):
    config_cls = RefSimConfig
    kind = "offline"
    completes_prompts = False  # compares answers to a reference; cannot rate a pool row

    def needs(self) -> list[tuple[str, str]]:
        try:
            minilm_dir()
        except FileNotFoundError as e:
            return [("error", f"judge '{self.name}': {e}")]
        return []

    def complete_many(self, items: list[JudgeItem],
                      on_done: Callable[[int, Completion], None]) -> None:
        for it in items:
            if it.messages is not None:
                self.messages(it)  # raises NotPromptable: not an LLM, it completes no prompt
        have = [i for i, it in enumerate(items) if it.reference]
        for i, it in enumerate(items):
            if not it.reference:
                on_done(i, Completion("no reference answer for this prompt"))
        if not have:
            return
        texts = []
        for i in have:
            texts += [items[i].reference, items[i].answer_1, items[i].answer_2]
        E = embed(texts, self.config.batch_size)
        stopped = None  # on_done said stop: the rest is computed already, hand it over
        for j, i in enumerate(have):
            r, a1, a2 = E[3 * j], E[3 * j + 1], E[3 * j + 2]
            c1, c2 = float(np.dot(r, a1)), float(np.dot(r, a2))
            s1, s2 = (round(1 + 9 * max(0.0, c), 1) for c in (c1, c2))
            self.stats["calls"] += 1
            try:
                on_done(i, Completion(f"{s1} {s2}\nreference-similarity (all-MiniLM-L6-v2, not "
                                      f"an LLM): cosine to the reference {c1:.4f} vs {c2:.4f}"))
            except StopRequests as e:
                stopped = stopped or e
        if stopped is not None:
            raise stopped
