"""Prompt formats shared by proxy scoring, training and generation.

``alpaca``: the Stanford Alpaca prompt (with/without an input block); the response follows
``### Response:\\n``. ``chat``: the model's own chat template with one user turn holding the
instruction (and input, after a blank line).
"""
from __future__ import annotations

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def format_prompt(instruction: str, input_: str = "", template: str = "alpaca",
                  tokenizer=None) -> str:
    if template == "alpaca":
        if input_.strip():
            return ALPACA_WITH_INPUT.format(instruction=instruction, input=input_)
        return ALPACA_NO_INPUT.format(instruction=instruction)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat template")
        content = f"{instruction}\n\n{input_}" if input_.strip() else instruction
        return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
    raise ValueError(f"unknown template {template!r} (alpaca | chat)")


def tokenize_example(tokenizer, row: dict, template: str, max_length: int) -> dict:
    """input_ids / labels (prompt tokens = -100) for one Alpaca row, right-truncated."""
    prompt = format_prompt(row["instruction"], row.get("input", ""), template, tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(row["output"], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        r_ids = r_ids + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None else []
    ids = (bos + p_ids + r_ids)[:max_length]
    n_prompt = min(len(bos) + len(p_ids), len(ids))
    labels = [-100] * n_prompt + ids[n_prompt:]
    if n_prompt >= len(ids) and len(ids) > 1:  # prompt filled the window: score the last token
        labels[-1] = ids[-1]
    return {"input_ids": ids, "labels": labels}
