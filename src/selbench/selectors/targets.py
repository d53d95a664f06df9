"""The target set of a targeted selector (dsir, embed-target): the run's eval prompts, a
registered eval set, a ``.jsonl`` file of prompts, or texts given inline."""
from __future__ import annotations

from ..data import load_eval_set
from .base import SelectionContext


def target_prompts(target: str, texts: list[str] | None, ctx: SelectionContext,
                   who: str) -> tuple[list[str], str]:
    if texts is not None:
        out, where = list(texts), "selector_params.target_texts"
    elif target == "eval":
        out = [it["prompt"] for items in ctx.eval_items.values() for it in items]
        where = f"the run's eval prompts ({', '.join(ctx.eval_items) or 'none'})"
        if not out:
            raise ValueError(f"{who}: target 'eval' needs the run's eval prompts, and this "
                             f"selection has none (run it through bench, or set "
                             f"selector_params.target to an eval set name or a .jsonl file)")
    else:
        out, where = [it["prompt"] for it in load_eval_set(target, ctx.data_dir)], target
    if not any(t.strip() for t in out):
        raise ValueError(f"{who}: the target ({where}) has no text")
    return out, where
