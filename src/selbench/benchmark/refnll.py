"""Reference-answer NLL: a judge-free, deterministic quality signal.

For every eval prompt that has a reference answer (the gpt-3.5-turbo answers DiverseEvol
released for WizardLM, Vicuna and Koala, under ``reference_answers/`` of the data dir), the
fine-tuned model scores the reference as its response: the prompt is rendered with the
SAME template as generation (``generate.template`` or ``train.template``, tokenized by
:func:`selbench.templates.encode_prompt`), the reference tokens follow, then EOS (as in
training), right-truncated to ``max_length`` tokens. The NLL is the model's mean
cross-entropy over the reference tokens only (the prompt is not scored).

Reported per eval set and pooled: ``nll`` = total NLL / total scored tokens (token-weighted),
``nll_mean_example`` = mean over prompts of each prompt's mean token NLL, ``ppl`` =
exp(nll), and the token count. Lower is better. It is its own leaderboard column, never
mixed with PWS.

Cached stage (run by the Pipeline): ``refnll/<train key>-<h8>/`` (result.json +
per_prompt.jsonl), keyed by the train key, template, max_length and the prompt ids of each
set (:meth:`~.stages.Stages.refnll_key`), so a model is scored once. The sets: the run's
eval sets plus ``koala`` (every set with reference answers), each cut to ``data.eval_limit``.
"""
from __future__ import annotations

import math

from ..templates import encode_prompt, format_prompt
from .stages import REFNLL_MAX_LENGTH as MAX_LENGTH


def encode_reference(tokenizer, prompt_text: str, reference: str, max_length: int) -> tuple[list[int], int]:
    """(input ids, number of prompt tokens) of prompt + reference + EOS, right-truncated."""
    p_ids = encode_prompt(tokenizer, prompt_text)
    r_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        r_ids = r_ids + [tokenizer.eos_token_id]
    ids = (p_ids + r_ids)[:max_length]
    return ids, min(len(p_ids), len(ids))


def reference_nll(model, tokenizer, prompts: list[str], references: list[str],
                  max_length: int = MAX_LENGTH, batch_size: int = 4) -> list[tuple[float, int]]:
    """[(sum of token NLL over the reference tokens, number of reference tokens)] per item."""
    import torch  # lazy: heavy

    device = next(model.parameters()).device
    encoded = [encode_reference(tokenizer, p, r, max_length) for p, r in zip(prompts, references)]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        L = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), L), pad, dtype=torch.long)
        att = torch.zeros((len(idx), L), dtype=torch.long)
        labels = torch.full((len(idx), L), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            x, n_p = encoded[i]
            ids[row, :len(x)] = torch.tensor(x)
            att[row, :len(x)] = 1
            labels[row, n_p:len(x)] = torch.tensor(x[n_p:])
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        tgt = labels[:, 1:].to(device)
        mask = tgt != -100
        tok = -lp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
        for row, i in enumerate(idx):
            out[i] = (float(tok[row].sum()), int(mask[row].sum()))
    return out


def summarize(per_prompt: list[dict]) -> dict:
    res = {}
    sets = sorted({r["eval_set"] for r in per_prompt})
    for name, rows in [(s, [r for r in per_prompt if r["eval_set"] == s]) for s in sets] + [("pooled", per_prompt)]:
        rows = [r for r in rows if r["tokens"] > 0]
        tot = sum(r["nll_sum"] for r in rows)
        n = sum(r["tokens"] for r in rows)
        nll = tot / n if n else float("nan")
        res[name] = {"nll": nll, "ppl": math.exp(nll) if n else float("nan"), "tokens": n,
                     "prompts": len(rows),
                     "nll_mean_example": (sum(r["nll_sum"] / r["tokens"] for r in rows) / len(rows))
                     if rows else float("nan")}
    return res


def score_references(model, tokenizer, items: dict[str, list[dict]], template: str,
                     max_length: int = MAX_LENGTH) -> list[dict]:
    """Per-prompt rows {eval_set, id, nll_sum, tokens} of one model on the reference answers
    of ``items`` (eval set -> items with a ``reference``)."""
    rows = []
    for es, its in items.items():
        prompts = [format_prompt(it["prompt"], "", template, tokenizer) for it in its]
        vals = reference_nll(model, tokenizer, prompts, [it["reference"] for it in its], max_length)
        rows += [{"eval_set": es, "id": it["id"], "nll_sum": s, "tokens": n}
                 for it, (s, n) in zip(its, vals)]
    return rows
