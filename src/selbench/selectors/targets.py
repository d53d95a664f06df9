"""The target set of a targeted selector (dsir, embed-target): the run's eval prompts, a
registered eval set, a ``.jsonl`` file of prompts, or texts given inline."""
from __future__ import annotations

from ..data import load_eval_set
from ..config import stable_hash
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


def target_identity(target: str, texts: list[str] | None, ctx: SelectionContext) -> dict:
    """The target's content for the select key: inline texts are in the config already; the
    run's eval prompts and a set or file by the hash of its prompts (an edited target file
    recomputes the selection); an unreadable target keys by its name (the selection itself
    then fails with the clear error of :func:`target_prompts`)."""
    if texts is not None:
        return {}
    if target == "eval":
        return {"target_prompts": {k: stable_hash([it["prompt"] for it in v])
                                   for k, v in sorted(ctx.eval_items.items())}}
    try:
        return {"target_prompts": stable_hash([it["prompt"] for it in load_eval_set(target, ctx.data_dir)])}
    except Exception:  # noqa: BLE001 - keyed by name; target_prompts raises the clear error
        return {"target_prompts": f"unreadable: {target}"}
