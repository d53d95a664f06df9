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


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids, the same everywhere a prompt is tokenized: proxy scoring,
    TRL training, HF generation and vLLM generation. The tokenizer's leading special tokens
    (BOS for Llama-style tokenizers, none for GPT-2-style ones) are added exactly once: not
    again when the rendered prompt (a chat template) already starts with them, and trailing
    special tokens a tokenizer may append (EOS) are never added to a prompt."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prompt.startswith(bos):
        return ids
    with_special = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    for start in range(len(with_special) - len(ids) + 1):  # leading specials, then the text
        if with_special[start:start + len(ids)] == ids:
            return with_special[:start] + ids
    return ids


def tokenize_example(tokenizer, row: dict, template: str, max_length: int) -> dict:
    """input_ids / labels (prompt tokens = -100) for one Alpaca row, right-truncated to
    max_length (``truncated`` says whether anything was cut). Used for the proxy and, as a
    pre-tokenized dataset, for TRL training, so every selected row is trained on."""
    prompt = format_prompt(row["instruction"], row.get("input", ""), template, tokenizer)
    p_ids = encode_prompt(tokenizer, prompt)
    r_ids = tokenizer(row["output"], add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        r_ids = r_ids + [tokenizer.eos_token_id]
    full = p_ids + r_ids
    ids = full[:max_length]
    n_prompt = min(len(p_ids), len(ids))
    labels = [-100] * n_prompt + ids[n_prompt:]
    if n_prompt >= len(ids) and len(ids) > 1:  # prompt filled the window: score the last token
        labels[-1] = ids[-1]
    return {"input_ids": ids, "labels": labels, "truncated": len(full) > max_length}
