"""Estimates of the work a run is: parameters, optimizer steps, FLOPs, device memory and
wall-clock hours. One owner for every formula, used by ``bench plan`` and by the study
tables (which show an estimated proxy FLOP count next to measured seconds).

Everything here is an **estimate** and is labelled so wherever it is shown:

- FLOPs: ``6 P T`` per trained token for full fine-tuning (forward + backward of weights
  and activations), ``4 P T`` for LoRA (no gradient of the frozen weights), ``2 P T`` per
  forward-only token (IFD scoring, generation), where P = parameters, T = tokens.
- Memory per device: weights + gradients + optimizer state (divided over the ranks under
  FSDP full sharding, replicated under DDP) + activations at the configured per-device
  batch and length (Korthikanti et al. 2022, with memory-efficient attention: ``34 s b h``
  bytes per layer in 16-bit, twice that in fp32; ``2 s b h`` per layer with gradient
  checkpointing) + logits (fp32, ``2 s b V x 4`` bytes: logits and their gradient) + a
  working margin. A model loaded in bf16 (``train.precision`` resolving to bf16) keeps
  16-bit weights, gradients and AdamW moments (8 bytes per parameter); fp32 keeps 16.
- Hours: FLOPs over an effective throughput per device class (:data:`DEVICE_CLASSES`: a
  measured figure for this project's CPU, peak x an assumed utilisation for GPUs);
  generation on a GPU is bounded below by reading the weights once per decoding step.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a decoder-only transformer."""

    params: float
    hidden: int
    layers: int
    vocab: int

    @property
    def largest_block(self) -> float:
        """Parameters of one decoder layer (what FSDP gathers at a time)."""
        return max(0.0, (self.params - self.vocab * self.hidden) / max(self.layers, 1))


# models the shipped configs name (from their config.json files; used when no config is
# readable here, e.g. a hub model that is not downloaded)
KNOWN_SHAPES: dict[str, ModelShape] = {
    "meta-llama/Llama-2-7b-hf": ModelShape(6.74e9, 4096, 32, 32000),
    "meta-llama/Llama-2-13b-hf": ModelShape(13.02e9, 5120, 40, 32000),
    "gpt2": ModelShape(124e6, 768, 12, 50257),
    "smollm2-135m-instruct": ModelShape(135e6, 576, 30, 49152),
    "gemma3-270m": ModelShape(268e6, 640, 18, 262144),
}
EMBEDDED_ALIASES = {"smollm2": "smollm2-135m-instruct"}


def _shape_from_config(c: dict) -> ModelShape | None:
    h = c.get("hidden_size") or c.get("n_embd")
    L = c.get("num_hidden_layers") or c.get("n_layer")
    V = c.get("vocab_size")
    if not (h and L and V):
        return None
    inter = c.get("intermediate_size") or c.get("n_inner") or 4 * h
    return ModelShape(float(L * (4 * h * h + 3 * h * inter) + V * h), int(h), int(L), int(V))


def model_shape(name: str) -> ModelShape | None:
    """Shape of a model named in a config: a known name, or a local folder with a config.json."""
    name = EMBEDDED_ALIASES.get(name, name)
    if name in KNOWN_SHAPES:
        return KNOWN_SHAPES[name]
    cfg_file = Path(name).expanduser() / "config.json"
    if cfg_file.is_file():
        try:
            return _shape_from_config(json.loads(cfg_file.read_text()))
        except (OSError, ValueError):
            return None
    return None


def model_params(name: str) -> float | None:
    s = model_shape(name)
    return s.params if s else None


# --------------------------------------------------------------------------- steps, tokens
def mean_tokens(rows: list[dict], max_length: int, sample: int = 2000) -> float:
    """Rough tokens per Alpaca example (characters / 4 plus the template), capped at max_length."""
    step = max(1, len(rows) // sample)
    lens = [min(max_length, 40 + (len(r["instruction"]) + len(r.get("input", "")) + len(r["output"])) / 4)
            for r in rows[::step]]
    return sum(lens) / max(1, len(lens))


def train_steps(n_examples: int, train, processes: int = 1, accum: int | None = None) -> int:
    """Optimizer steps as the training harness takes them: ``max_steps`` when set; else
    ceil(n / effective batch) per epoch, raised to ``min_steps`` when that is more."""
    if train.max_steps and train.max_steps > 0:
        return int(train.max_steps)
    if accum is None:
        accum = train.effective_batch // (train.batch_size * processes) if train.effective_batch \
            else train.grad_accum
    per_epoch = math.ceil(n_examples / max(1, train.batch_size * processes * accum))
    steps = per_epoch * math.ceil(train.epochs)
    if train.min_steps and steps < train.min_steps:
        return int(train.min_steps)
    return int(steps)


def trained_examples(n_examples: int, train, processes: int = 1) -> float:
    """Examples seen in training: steps x examples per step, where a step over a subset
    smaller than the batch holds what there is (``min_steps`` loops a small subset)."""
    accum = train.effective_batch // (train.batch_size * processes) if train.effective_batch \
        else train.grad_accum
    per_epoch = math.ceil(n_examples / max(1, train.batch_size * processes * accum))
    steps = train_steps(n_examples, train, processes, accum)
    return float(steps) * n_examples / max(1, per_epoch)


# --------------------------------------------------------------------------- FLOPs
def train_flops(params: float, examples_seen: float, tokens: float, method: str) -> float:
    return (6.0 if method == "full" else 4.0) * params * examples_seen * tokens


def profile_flops(params: float, n: int, tokens: float, members: int, epochs: int,
                  record: str) -> float:
    """The gradient profile: every member trains E epochs (forward+backward of the activations
    and the LoRA weights ~ 6 P T, as the perf benchmark counts it), twice when the norms are
    recorded in a separate pass."""
    return 6.0 * params * n * tokens * members * epochs * (2 if record == "pass" else 1)


def forward_flops(params: float, n: int, tokens: float, passes: float = 1.0) -> float:
    return 2.0 * params * n * tokens * passes


def fmt_params(x: float | None) -> str:
    if not x:
        return "?"
    return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.0f}M"


def fmt_flops(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "?"
    for unit, div in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{x:.0f} FLOP"


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x / GIB:.1f} GiB"


def fmt_hours(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- memory
@dataclass
class Memory:
    """Estimated peak memory of one process (bytes), with its parts."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    other: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.other

    def describe(self) -> str:
        return (f"{fmt_bytes(self.total)} (weights {fmt_bytes(self.weights)}, gradients "
                f"{fmt_bytes(self.gradients)}, optimizer {fmt_bytes(self.optimizer)}, "
                f"activations {fmt_bytes(self.activations)}, other {fmt_bytes(self.other)})")


def train_memory(shape: ModelShape, method: str, batch: int, seq: int, bf16: bool,
                 processes: int = 1, fsdp: bool = False, lora_params: float = 0.0,
                 checkpointing: bool = False) -> Memory:
    """Peak memory of one training rank (see the module docstring for the model)."""
    P = shape.params
    wbytes = 2.0 if bf16 else 4.0
    shard = processes if fsdp and processes > 1 else 1
    if method == "full":
        weights = P * wbytes / shard
        grads = P * wbytes / shard
        optim = 2 * P * wbytes / shard  # AdamW m and v in the parameters' dtype
        if shard > 1:  # FSDP gathers one decoder layer (and its gradient) at a time
            weights += 2 * shape.largest_block * wbytes
    else:
        weights = P * wbytes / shard
        grads = lora_params * 4.0
        optim = lora_params * 8.0
    per_layer = (2.0 if checkpointing else 34.0) * seq * batch * shape.hidden * (wbytes / 2.0)
    acts = per_layer * shape.layers
    if checkpointing:  # one layer recomputed in full during the backward
        acts += 34.0 * seq * batch * shape.hidden * (wbytes / 2.0)
    logits = 2.0 * seq * batch * shape.vocab * 4.0
    other = 1.0 * GIB + 0.05 * (weights + grads + optim)  # CUDA context, allocator slack
    return Memory(weights, grads, optim, acts + logits, other)


def inference_memory(shape: ModelShape, bf16: bool, batch: int, seq: int) -> Memory:
    """Forward-only memory (scoring, HF generation): weights + one batch's activations and logits."""
    wbytes = 2.0 if bf16 else 4.0
    acts = 4.0 * seq * batch * shape.hidden * wbytes + seq * batch * shape.vocab * 4.0
    return Memory(shape.params * wbytes, 0.0, 0.0, acts, 0.5 * GIB)


def lora_param_count(shape: ModelShape, r: int, targets: int = 3) -> float:
    """LoRA parameters on ``targets`` square-ish projections per layer: r (h + h) each."""
    return float(shape.layers * targets * r * 2 * shape.hidden)


# --------------------------------------------------------------------------- time
@dataclass(frozen=True)
class DeviceClass:
    """Effective throughput of one device (an estimate): FLOP/s of training and of
    forward-only work, and memory bandwidth (bytes/s, for decoding)."""

    name: str
    train_flops: float
    forward_flops: float
    bandwidth: float
    memory_gb: float
    source: str
    proxy_flops: float | None = None  # the proxy's tight training loop (None = train_flops)


# CPU figures: measured end to end on this project's 2-core AVX2 CPU in fp32 with the
# embedded SmolLM2 (`bench run` on the smoke config, README Performance): the full-data SFT
# (200 examples, 25 steps, ~13 TFLOP by the formula above) took 601 s at 2 threads = 22
# GFLOP/s; reference NLL of 30 long reference answers took 73 s = ~50 GFLOP/s forward;
# hf generation of 20 prompts x 128 new tokens took 83 s (batch 10) = 1.7 GB/s of weight
# reads per decoding step. (The proxy profile's tighter loop reaches 71 GFLOP/s:
# perf/gsnr.json.) GPU figures: dense bf16 peak x an assumed utilisation (40% training, 50%
# batched forward passes), HBM bandwidth x 60%.
DEVICE_CLASSES: dict[str, DeviceClass] = {
    "cpu": DeviceClass("cpu (2-core AVX2, fp32, measured)", 22e9, 50e9, 1.7e9, 24.0,
                       "bench run on configs/default.yaml (README Performance), perf/gsnr.json",
                       71e9),
    "a100-80gb": DeviceClass("A100 80GB (bf16)", 0.40 * 312e12, 0.50 * 312e12, 0.6 * 2.0e12, 80.0,
                             "NVIDIA A100 datasheet peak x assumed utilisation"),
    "h100-80gb": DeviceClass("H100 80GB SXM (bf16)", 0.40 * 989e12, 0.50 * 989e12, 0.6 * 3.35e12, 80.0,
                             "NVIDIA H100 datasheet peak x assumed utilisation"),
    "h200": DeviceClass("H200 141GB (bf16)", 0.40 * 989e12, 0.50 * 989e12, 0.6 * 4.8e12, 141.0,
                        "NVIDIA H200 datasheet peak x assumed utilisation"),
}


def device_class_for(device: str, gpu_name: str | None = None, memory_gb: float | None = None) -> DeviceClass:
    """The throughput class of a device: the visible GPU by name, else by its memory size
    (80 GB -> A100 80GB), else the measured CPU."""
    if device.startswith("cuda"):
        n = (gpu_name or "").lower()
        if "h200" in n:
            return DEVICE_CLASSES["h200"]
        if "h100" in n:
            return DEVICE_CLASSES["h100-80gb"]
        if memory_gb and memory_gb > 100:
            return DEVICE_CLASSES["h200"]
        return DEVICE_CLASSES["a100-80gb"]
    return DEVICE_CLASSES["cpu"]


def seconds_for(flops: float | None, dev: DeviceClass, kind: str = "train", processes: int = 1) -> float | None:
    if flops is None:
        return None
    rate = {"train": dev.train_flops, "forward": dev.forward_flops,
            "proxy": dev.proxy_flops or dev.train_flops}[kind]
    return flops / (rate * max(1, processes))


def generate_seconds(params: float, prompts: int, new_tokens: int, prompt_tokens: float,
                     dev: DeviceClass, backend: str, concurrency: int = 256) -> float:
    """Answer generation: the larger of the compute time (2 P per token) and the weight-read
    time (each decoding step reads the weights once; ``concurrency`` sequences share a step
    under vLLM, one batch under hf)."""
    tokens = prompts * (prompt_tokens + new_tokens)
    compute = 2.0 * params * tokens / dev.forward_flops
    par = concurrency if backend == "vllm" else 16
    steps = new_tokens * math.ceil(prompts / par)
    bytes_per_param = 4.0 if dev.name.startswith("cpu") else 2.0
    memory = steps * params * bytes_per_param / dev.bandwidth
    return max(compute, memory)


def judge_tokens(max_new_tokens: int, judge_max_tokens: int | None) -> tuple[float, float, float]:
    """(prompt tokens per call at most, expected prompt tokens, completion tokens per call
    at most): the pairwise prompt (~350 tokens) holds the question and both answers."""
    upper = 350.0 + 2.0 * max_new_tokens
    expected = 350.0 + 2.0 * min(max_new_tokens, 300)
    return upper, expected, float(judge_max_tokens or 512)
