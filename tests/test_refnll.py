"""Reference-answer NLL against an independent per-example computation (tiny model)."""
import math

import pytest


def _independent(model, tok, prompt_text, reference, max_length):
    """Per example, no batching, no padding: HF's own shifted-label loss on the reference."""
    import torch

    p = tok(prompt_text, add_special_tokens=False)["input_ids"]
    with_special = tok(prompt_text, add_special_tokens=True)["input_ids"]
    lead = with_special[: len(with_special) - len(p)] if with_special[-len(p):] == p else []
    p = lead + p
    r = tok(reference, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + r)[:max_length]
    labels = [-100] * len(p) + ids[len(p):]
    labels = labels[: len(ids)]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
    n = sum(1 for x in labels[1:] if x != -100)
    return float(out.loss) * n, n


def test_reference_nll_equals_independent_loop(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from selbench.benchmark.refnll import reference_nll, summarize
    from selbench.models import load_tokenizer
    from selbench.templates import format_prompt

    tok = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).float().eval()
    qs = ["What is 2+2?", "Write a haiku about the sea, please, with some detail.", "Hi"]
    refs = ["Four.", "Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps its time",
            "Hello! How can I help you today? " * 5]
    prompts = [format_prompt(q, "", "alpaca") for q in qs]
    for max_length in (1024, 60):
        got = reference_nll(model, tok, prompts, refs, max_length=max_length, batch_size=2)
        for (s, n), p, r in zip(got, prompts, refs):
            s2, n2 = _independent(model, tok, p, r, max_length)
            assert n == n2 and n > 0
            assert s == pytest.approx(s2, rel=1e-4, abs=1e-4)
    rows = [{"eval_set": "x", "id": str(i), "nll_sum": s, "tokens": n} for i, (s, n) in enumerate(got)]
    summ = summarize(rows)
    tot = sum(s for s, _ in got) / sum(n for _, n in got)
    assert summ["pooled"]["nll"] == pytest.approx(tot)
    assert summ["x"]["ppl"] == pytest.approx(math.exp(tot))
    # a random tiny model is close to uniform over the vocabulary
    assert abs(summ["pooled"]["nll"] - math.log(len(tok))) < 1.0
