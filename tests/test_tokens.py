"""Special tokens: the prompt token ids are the same in proxy scoring, TRL training and
generation, for a Llama-style tokenizer (adds BOS) and a GPT-2-style one (adds nothing).
Both tokenizers are built in-process (no hub)."""
import json

import pytest

from selbench.templates import encode_prompt, format_prompt, tokenize_example

TEXTS = ["Below is an instruction that describes a task. Write a response.",
         "### Instruction:\nSay hi\n\n### Response:\nhi there", "alpha beta gamma delta " * 20]


def _tokenizer(style: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] if style == "llama" else ["<|endoftext|>"]
    tok = Tokenizer(models.BPE(unk_token=specials[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if style == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


@pytest.fixture(params=["llama", "gpt2"])
def styled(request):
    return request.param, _tokenizer(request.param)


def test_bos_exactly_once_for_llama_style_and_never_for_gpt2_style(styled):
    style, tok = styled
    prompt = format_prompt("Say hi", "", "alpaca")
    ids = encode_prompt(tok, prompt)
    plain = tok(prompt, add_special_tokens=False)["input_ids"]
    if style == "llama":
        assert ids == [tok.bos_token_id] + plain
        # a rendered chat template that already starts with BOS does not get a second one
        assert encode_prompt(tok, "<s>" + prompt).count(tok.bos_token_id) == 1
    else:
        assert ids == plain and tok.bos_token_id not in ids


def test_training_rows_start_with_the_generation_prompt_ids(styled):
    _, tok = styled
    row = {"instruction": "Say hi", "input": "", "output": "hi there"}
    ex = tokenize_example(tok, row, "alpaca", 512)
    p_ids = encode_prompt(tok, format_prompt("Say hi", "", "alpaca"))
    assert ex["input_ids"][:len(p_ids)] == p_ids
    assert ex["labels"][:len(p_ids)] == [-100] * len(p_ids)
    assert ex["input_ids"][-1] == tok.eos_token_id and not ex["truncated"]


def test_long_rows_are_truncated_not_dropped(styled):
    _, tok = styled
    row = {"instruction": "Say hi", "input": "", "output": "alpha beta gamma delta " * 200}
    ex = tokenize_example(tok, row, "alpaca", 64)
    assert len(ex["input_ids"]) == 64 and ex["truncated"]
    assert any(l != -100 for l in ex["labels"])


def test_trl_trains_on_every_selected_row_with_the_same_prompt_ids(tmp_path):
    """TRL gets our pre-tokenized rows: the ids it trains on are ours, none is dropped, and
    rows longer than max_length are truncated and counted."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selbench.benchmark import train as tr
    from selbench.config import TrainConfig

    tok = _tokenizer("llama")
    model_dir = tmp_path / "m"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rows = [{"instruction": f"Say hi {i}", "input": "", "output": "hi there"} for i in range(5)]
    rows.append({"instruction": "Long", "input": "", "output": "alpha beta gamma delta " * 400})
    seen = {}
    real = tr.to_sft_rows

    def spy(*a, **k):
        out = real(*a, **k)
        seen["rows"] = [dict(r) for r in out]
        return out

    tr.to_sft_rows = spy
    try:
        info = tr.train_model(str(model_dir), rows, TrainConfig(epochs=1, batch_size=2, max_length=200,
                              learning_rate=1e-3, warmup_ratio=0.0), tmp_path / "out", progress=False)
    finally:
        tr.to_sft_rows = real
    assert info["examples"] == info["examples_trained"] == 6 and info["truncated"] == 1
    assert info["steps"] == 3
    p0 = encode_prompt(tok, format_prompt("Say hi 0", "", "alpaca"))
    assert seen["rows"][0]["input_ids"][:len(p0)] == p0 and p0[0] == tok.bos_token_id
    assert json.loads((tmp_path / "out" / "train.json").read_text())["truncated"] == 1
