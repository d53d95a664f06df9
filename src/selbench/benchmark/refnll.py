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

Cached stage: ``refnll/<train key>-<h8>/`` (result.json + per_prompt.jsonl), keyed by the
train key, template, max_length and the prompt ids of each set, so a model is scored once.
The sets: the run's eval sets plus ``koala`` (every set with reference answers), each cut
to ``data.eval_limit``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

REFNLL_VERSION = 1
REF_SETS = ("wizardlm", "vicuna", "koala")
MAX_LENGTH = 1024


def encode_reference(tokenizer, prompt_text: str, reference: str, max_length: int) -> tuple[list[int], int]:
    """(input ids, number of prompt tokens) of prompt + reference + EOS, right-truncated."""
    from ..templates import encode_prompt

    p_ids = encode_prompt(tokenizer, prompt_text)
    r_ids = tokenizer(reference, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        r_ids = r_ids + [tokenizer.eos_token_id]
    ids = (p_ids + r_ids)[:max_length]
    return ids, min(len(p_ids), len(ids))


def reference_nll(model, tokenizer, prompts: list[str], references: list[str],
                  max_length: int = MAX_LENGTH, batch_size: int = 4) -> list[tuple[float, int]]:
    """[(sum of token NLL over the reference tokens, number of reference tokens)] per item."""
    import torch

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


def reference_items(pipe) -> dict[str, list[dict]]:
    """Eval items with a reference answer: the run's eval sets plus koala (eval_limit each)."""
    from ..data import DataNotFound, load_eval_set

    d = pipe.cfg.data
    out = {}
    for es in list(dict.fromkeys([*d.eval_sets, *REF_SETS])):
        try:
            items = pipe.evals[es] if es in pipe.evals else load_eval_set(es, d.data_dir, d.eval_limit)
        except DataNotFound:
            continue
        items = [it for it in items if it.get("reference")]
        if items:
            out[es] = items
    return out


def refnll_key(pipe, train_key):
    from ..runs import stage_key

    cfg = pipe.cfg
    template = cfg.generate.template or cfg.train.template
    sets = {k: [it["id"] for it in v] for k, v in reference_items(pipe).items()}
    return stage_key("refnll", train_key.key, {"template": template, "max_length": MAX_LENGTH,
                                                "version": REFNLL_VERSION}, sets, train_key.digest)


def refnll_stage(pipe, train_key) -> dict:
    """Run (or reuse) the reference-NLL stage of the model trained under ``train_key``."""
    from ..models import load_tokenizer
    from .train import load_trained

    cfg = pipe.cfg
    template = cfg.generate.template or cfg.train.template
    key = refnll_key(pipe, train_key)
    items = reference_items(pipe)

    def build(tmp: Path) -> None:
        from ..templates import format_prompt

        tok = load_tokenizer(cfg.model, padding_side="right")
        model = load_trained(cfg.model, pipe.rd.path(train_key), cfg.train.method, pipe.device)
        rows = []
        for es, its in items.items():
            prompts = [format_prompt(it["prompt"], "", template, tok) for it in its]
            vals = reference_nll(model, tok, prompts, [it["reference"] for it in its], MAX_LENGTH)
            rows += [{"eval_set": es, "id": it["id"], "nll_sum": s, "tokens": n}
                     for it, (s, n) in zip(its, vals)]
        with (tmp / "per_prompt.jsonl").open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        res = {"train_key": train_key.key, "template": template, "max_length": MAX_LENGTH,
               "summary": summarize(rows)}
        (tmp / "result.json").write_text(json.dumps(res, indent=2))
        p = res["summary"].get("pooled", {})
        pipe.log(f"[refnll] {train_key.name}: reference NLL {p.get('nll', float('nan')):.4f} "
                 f"over {p.get('tokens', 0)} tokens")

    folder = pipe.rd.cached(key, build, {"template": template, "max_length": MAX_LENGTH,
                                         "train": train_key.key}, log=pipe.stage_log)
    pipe.record_stage(f"refnll/{key.key}", folder, key)
    return json.loads((folder / "result.json").read_text())
