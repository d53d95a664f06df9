"""Configuration: dataclasses, layered YAML, CLI overrides, stable hashes.

A run is described by one :class:`RunConfig`. YAML files may ``include:`` other YAML files
(paths relative to the including file); later layers override earlier ones key by key.
``--set a.b=value`` on the command line overrides any key. Unknown keys are errors that
name the file (or flag) and the key.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import io
import json
import os
import re
import textwrap
import tokenize
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from .hardware import PRECISIONS, resolve_precision
from .registry import suggest

CACHE_VERSION = 1  # bump to invalidate every cached stage when a stage's semantics change


class ConfigError(ValueError):
    pass


@dataclass
class DataConfig:
    pool: str = "alpaca"
    """'alpaca' | 'alpaca-gpt4' (local file under data_dir, else the HF hub), a .json/.jsonl
    path, or a Hugging Face dataset id."""
    data_dir: str | None = None
    """Folder holding train/ and eval_prompts/ (the layout of shared/data). Also taken from
    the SELBENCH_DATA_DIR environment variable or --data-dir."""
    pool_size: int | None = None
    """Seeded random sample of the pool (None = the whole pool)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column mapping for pools in other layouts, e.g. {instruction: prompt, output:
    response, input: context}; rows with a chat ``messages`` (or ShareGPT ``conversations``)
    list are read as instruction = first user turn, output = the assistant turn after it."""
    sample_seed: int = 0
    """Seed of the pool sample (data.pool_size)."""
    eval_sets: list[str] = field(default_factory=lambda: ["wizardlm", "vicuna"])
    """Eval sets to answer and judge: registered names (wizardlm, vicuna, koala, lima,
    sinstruct) or a .jsonl file of your own (a prompt field per row; see the README)."""
    eval_limit: int | None = None
    """First N prompts of each eval set (None = all)."""
    reference_sets: list[str] | None = None
    """Eval sets scored by the reference-answer NLL stage (each cut to eval_limit); None =
    the eval sets plus koala (every set with reference answers)."""
    reference_max_length: int = 1024
    """Reference NLL: prompt + reference answer + EOS right-truncated to this many tokens
    (the NLL is the mean over the reference tokens that remain)."""
    corrupt: dict[str, Any] = field(default_factory=dict)
    """Planted corruption of the loaded pool (after the sample): {fraction, kinds, seed}
    (see `bench corrupt`); {} = none. The corruption record travels with the pool, so the
    oracle-clean / oracle-corrupt controls and the corruption track can read it."""


@dataclass
class TrainConfig:
    method: str = "lora"  # lora | full fine-tuning of the target model
    lora_r: int = 8  # LoRA rank
    lora_alpha: int = 16  # LoRA alpha
    lora_dropout: float = 0.05  # LoRA dropout
    target_modules: list[str] | None = None  # LoRA targets; None = attention q/k/v (auto-detected)
    learning_rate: float = 2e-4  # peak learning rate (AdamW)
    epochs: float = 1.0  # passes over the training rows
    batch_size: int = 8  # per device (per process)
    grad_accum: int = 1  # gradient accumulation steps (derived when effective_batch is set)
    effective_batch: int | None = None
    """Examples per optimizer step over all processes; when set, grad_accum is derived as
    effective_batch / (batch_size * launch.num_processes), so the recipe is the same on 1 or
    8 GPUs (and the cache key does not depend on the split)."""
    max_length: int = 256  # tokens per training row (longer rows are truncated, never dropped)
    template: str = "alpaca"  # prompt format: alpaca | chat (the model's chat template)
    lr_scheduler: str = "cosine"  # transformers scheduler name
    warmup_ratio: float = 0.03  # share of the steps spent warming up
    weight_decay: float = 0.0  # AdamW weight decay
    precision: str = "auto"
    """auto | fp32 | bf16. auto = bf16 where the device computes it natively (a CUDA GPU
    with bf16, a CPU with avx512_bf16 or AMX), else fp32; the model is loaded in this dtype
    and the resolved value is part of the train stage key."""
    seed: int = 42  # training seed (data order, LoRA init)
    max_steps: int = -1  # stop after this many optimizer steps (-1 = by epochs)
    min_steps: int = 0
    """Train at least this many optimizer steps (more epochs over a small subset): at the
    smoke scale a 5% subset is one or two batches, too few updates to move a model."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Passed through to trl.SFTConfig as keyword arguments."""


@dataclass
class GenerateConfig:
    """Decoding and backend settings, all hashed into the generate stage key. Two cannot
    change the answers, only memory: ``kv_cache_gb`` and ``gpu_memory_utilization`` (changing
    them recomputes the stage). ``generate_cache_config`` in ``benchmark/generate.py`` gives
    the answer-relevant subset, resolved on the device (written to the stage's config.yaml)."""
    backend: str = "hf"  # hf | vllm
    max_new_tokens: int = 256  # answer length limit
    batch_size: int = 16  # hf only (vLLM schedules its own batches)
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling (only when temperature > 0)
    seed: int = 0  # sampling seed
    template: str | None = None  # None = same as train.template
    dtype: str = "auto"
    """auto | float32 | bfloat16 | float16. auto = bfloat16 where the device computes it
    natively (a CUDA GPU with bf16, a CPU with avx512_bf16 or AMX), else float32 (both
    backends). Greedy answers of hf and vLLM agree token for token in float32; in bfloat16
    they may diverge after some tokens. The resolved dtype is part of the generate key."""
    # ---- vLLM engine (backend vllm only)
    tensor_parallel_size: int = 1  # vLLM: GPUs per engine
    max_model_len: int | None = None  # None = the model's own context length
    enforce_eager: bool | None = None
    """None = eager on a CPU (torch.compile would add ~90 s per engine start), CUDA graphs on a GPU."""
    gpu_memory_utilization: float = 0.9  # GPU only; not in the stage key
    kv_cache_gb: float | None = None
    """KV cache size in GiB (vLLM's kv_cache_memory_bytes; VLLM_CPU_KVCACHE_SPACE also works).
    None = 2 GiB on a CPU, from gpu_memory_utilization on a GPU. Not in the stage key."""


@dataclass
class LaunchConfig:
    """How heavy stages run: in this process (``none``) or as N processes under an existing
    launcher (``torchrun`` or ``accelerate``, which also takes an accelerate/DeepSpeed/FSDP
    ``config_file``). Never part of a stage's cache key: the driver keeps the stage contract
    (temp folder renamed on success) whatever runs inside it."""

    launcher: str = "none"  # none | torchrun | accelerate
    num_processes: int = 1  # processes (one per GPU) of a launched stage
    config_file: str | None = None  # accelerate config (DDP / FSDP / DeepSpeed ZeRO-3)
    extra_args: list[str] = field(default_factory=list)  # e.g. multi-node rendezvous flags
    stages: list[str] = field(default_factory=lambda: ["train", "score"])
    """Which stages use the launcher: train (TRL fine-tuning) and score (sharded IFD and
    gradient-profile scoring)."""


@dataclass
class ProxyConfig:
    """One shared way to name the proxy model of every proxy-based selector (gsnr and its
    ablations, ifd, ifd-diverse, grads, spice...). Each field left at None keeps the
    selector's own default; a set field fills the same-named setting of whichever selector
    runs (top-level or in its ``profile``), unless ``selector_params`` sets it explicitly.
    Fields a selector does not have are ignored for it, so one layer
    (``configs/paper/proxy-gpt2.yaml``) is accepted with any selector."""

    model: str | None = None  # proxy model of every proxy selector (-> `proxy` / `profile.proxy`)
    max_length: int | None = None  # tokens per example the proxy reads
    batch_size: int | None = None  # proxy batch size (scoring and the gradient profile)
    precision: str | None = None  # gradient profile: fp32 | bf16 | auto
    record: str | None = None  # gradient profile: pass (at theta_e, eval mode) | train
    projection_dim: int | None = None  # projected gradients (SPICE variants)


@dataclass
class PlanConfig:
    """What ``bench plan`` checks a run against when the target machine is not this one
    (the paper configs plan on a laptop for an 8-GPU node). Never part of a stage key."""

    device_memory_gb: float | None = None
    """Memory of one device in GiB; None = the visible device's (a CUDA GPU's memory, else
    this machine's RAM). The paper configs set 80 (an A100 / H100 80GB)."""
    device_class: str | None = None
    """Throughput class for the hour estimates: cpu | a100-80gb | h100-80gb | h200; None =
    from the visible device (this CPU's measured figures on a CPU)."""


@dataclass
class RunConfig:
    experiment: str = "default"
    """Name of the experiment folder under runs_dir; stages are shared within it."""
    runs_dir: str = "runs"
    """Folder that holds the experiments (runs/<experiment>/...) and the leaderboard."""
    model: str = "smollm2-135m-instruct"
    """Target model to fine-tune: an embedded name (smollm2-135m-instruct, gemma3-270m), a
    local folder or a Hugging Face hub id."""
    selector: str = "random"
    """Selector name (bench ls lists them)."""
    ratios: list[float] = field(default_factory=lambda: [0.05])
    """Fractions of the pool to select, each in (0, 1]; one subset model per ratio."""
    seed: int = 0
    """Selection seed (tie-breaks, random subsets, proxy inits and data orders)."""
    selector_params: dict[str, Any] = field(default_factory=dict)
    """Overrides of the chosen selector's own config dataclass (validated there)."""
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    report_to: list[str] = field(default_factory=list)
    """Training loggers for TRL's report_to (wandb, tensorboard, mlflow...). Never part of a
    cache key: turning logging on retrains nothing."""
    judges: list[str] = field(default_factory=lambda: ["offline-refsim-minilm"])
    """Judge names from configs/judges (or YAML paths); several give per-judge PWS and a mean."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    device: str = "auto"
    """auto | cpu | cuda | cuda:N. auto = cuda when a CUDA GPU is visible, else cpu."""
    threads: int | None = None
    """torch CPU threads of this process (None = torch's default, all cores)."""
    plan: PlanConfig = field(default_factory=PlanConfig)


# --------------------------------------------------------------------------- building
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a YAML value to the annotated type; raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [v.strip() for v in str(value).split(",")] if isinstance(value, str) else [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are errors (with a suggestion)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}'{suggest(key, names)} "
                              f"(known: {', '.join(sorted(names))})")
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("extra",):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- bounded YAML
MAX_YAML_BYTES = 4 << 20  # the largest YAML file selbench reads (configs are kilobytes)
MAX_YAML_NODES = 200_000  # nodes of one document once every alias is expanded


class YAMLTooLarge(yaml.YAMLError):
    """A YAML document past the bounds: too many bytes, or aliases that expand too far."""


def _expanded_nodes(root, limit: int) -> int:
    """Nodes of the document at ``root`` with every alias counted as a full copy of its
    anchor (what anything walking the loaded data will visit); raises YAMLTooLarge past
    ``limit`` or on a recursive alias. Linear in the composed graph (memoised per node)."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node) -> int:
        k = id(node)
        if k in memo:
            return memo[k]
        if k in active:
            raise YAMLTooLarge("a recursive alias (an anchor used inside itself): refused")
        active.add(k)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n += size(child)
                if n > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for kn, vn in node.value:
                n += size(kn) + size(vn)
                if n > limit:
                    break
        if n > limit:
            raise YAMLTooLarge(f"its aliases (*name) expand it to more than {limit:,} nodes "
                               f"(a YAML alias bomb?): refused")
        active.discard(k)
        memo[k] = n
        return n

    return size(root)


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand past MAX_YAML_NODES
    before anything is built from it (a 9-line "billion laughs" file fails in milliseconds
    instead of making every later walk over the data run for minutes)."""

    def construct_document(self, node):
        _expanded_nodes(node, MAX_YAML_NODES)
        return super().construct_document(node)


def load_yaml_text(text: str) -> Any:
    """``yaml.safe_load`` within the bounds (MAX_YAML_BYTES, MAX_YAML_NODES); raises
    yaml.YAMLError (YAMLTooLarge past the bounds). Every YAML selbench reads goes through
    here: run configs and their includes, grid files, judge YAMLs, judge prompt files,
    launch configs, ``--set`` values."""
    if len(text) > MAX_YAML_BYTES:
        raise YAMLTooLarge(f"{len(text):,} characters, more than the {MAX_YAML_BYTES:,} a "
                           f"YAML file may have here: refused")
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike, what: str = "YAML") -> Any:
    """One YAML file, bounded (:func:`load_yaml_text`); every problem is a ConfigError
    naming the file: missing, a folder, not a regular file (a FIFO would block), too
    large, not UTF-8, invalid, an alias bomb, nested too deeply, unreadable."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a {what} file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file (a FIFO or device?); give a {what} file")
    try:
        if path.stat().st_size > 4 * MAX_YAML_BYTES:  # not even read
            raise YAMLTooLarge(f"{path.stat().st_size:,} bytes, more than a YAML file may "
                               f"have here: refused")
        return load_yaml_text(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None


def load_yaml_layers(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read a YAML config, resolving ``include:`` (a path or a list, relative to the file)."""
    path = Path(path).expanduser().resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle")
    data = read_yaml(path, "YAML config") or {}  # missing, a folder, a FIFO: named there
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) and i.strip() for i in includes):
        raise ConfigError(f"{path}: include: expected a file path or a list of paths, "
                          f"got {includes!r}")
    merged: dict = {}
    for inc in includes:
        merged = deep_merge(merged, load_yaml_layers(path.parent / inc, (*_seen, path)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(f"--set {text!r}: empty key (expected key.path=value)")
    if not raw.strip():
        return keys, ""
    try:
        return keys, load_yaml_text(raw)
    except YAMLTooLarge as e:
        raise ConfigError(f"--set {text!r}: the value is refused: {e}") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({problem}); quote "
                          f"it, e.g. --set '{key.strip()}=\"{raw}\"'") from None
    except RecursionError:
        raise ConfigError(f"--set {text!r}: the value is nested too deeply") from None


def set_path(d: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: '{k}' is not a mapping")
    d[keys[-1]] = value


def build_config(files: list[str] | None = None, overrides: dict | None = None,
                 sets: list[str] | None = None, loader=None) -> RunConfig:
    """Layers: dataclass defaults < YAML files (in order) < named CLI flags < --set.
    ``loader`` reads one YAML file with its includes (default :func:`load_yaml_layers`; a
    grid passes a memoising one)."""
    loader = loader or load_yaml_layers
    data: dict = {}
    for f in files or []:
        layer = loader(f)
        try:
            from_dict(RunConfig, deep_merge(data, layer), where=str(f))
        except ConfigError:
            raise
        data = deep_merge(data, layer)
    for keys, value in (overrides or {}).items():
        set_path(data, keys.split("."), value)
    for s in sets or []:
        keys, value = parse_override(s)
        set_path(data, keys, value)
    cfg = from_dict(RunConfig, data, where="config")
    validate(cfg)
    return cfg


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def safe_component(value: str, what: str) -> str:
    """`value` if it is one safe path component (letters, digits, . _ + -, not starting with
    a dot, at most 100 characters), else a ConfigError naming `what`."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or value in (".", ".."):
        raise ConfigError(f"{what} {value!r} must be one folder name: 1-100 characters from "
                          f"letters, digits and . _ + -, not starting with '.' or '-'")
    return value


def validate(cfg: RunConfig) -> None:
    safe_component(cfg.experiment, "experiment")
    if not cfg.ratios:
        raise ConfigError("ratios: give at least one ratio, e.g. --ratio 0.05")
    if len(set(cfg.ratios)) != len(cfg.ratios):
        raise ConfigError(f"ratios {cfg.ratios}: a ratio is listed twice")
    for r in cfg.ratios:
        if not (0.0 < r <= 1.0):
            raise ConfigError(f"ratio {r} is outside (0, 1]: use e.g. 0.05 for 5%")
    la = cfg.launch
    if la.launcher not in ("none", "torchrun", "accelerate"):
        raise ConfigError(f"launch.launcher must be none, torchrun or accelerate, got {la.launcher!r}")
    if la.num_processes < 1:
        raise ConfigError(f"launch.num_processes must be >= 1, got {la.num_processes}")
    if la.launcher == "none" and la.num_processes > 1:
        raise ConfigError("launch.num_processes > 1 needs launch.launcher: torchrun or accelerate")
    t = cfg.train
    for name in ("batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name} must be >= 1, got {getattr(t, name)}")
    if t.epochs <= 0:
        raise ConfigError(f"train.epochs must be > 0, got {t.epochs}")
    if t.learning_rate < 0:
        raise ConfigError(f"train.learning_rate must be >= 0, got {t.learning_rate}")
    if t.min_steps < 0:
        raise ConfigError(f"train.min_steps must be >= 0, got {t.min_steps}")
    if not 0.0 <= t.lora_dropout < 1.0:
        raise ConfigError(f"train.lora_dropout must be in [0, 1), got {t.lora_dropout}")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if t.precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if cfg.proxy.precision is not None and cfg.proxy.precision not in PRECISIONS:
        raise ConfigError(f"proxy.precision must be one of {', '.join(PRECISIONS)}, got "
                          f"{cfg.proxy.precision!r}")
    if t.effective_batch is not None and t.effective_batch < 1:
        raise ConfigError(f"train.effective_batch must be >= 1 (or null), got {t.effective_batch}")
    if t.effective_batch is not None:
        per_step = t.batch_size * (la.num_processes if "train" in la.stages else 1)
        if t.effective_batch % per_step:
            raise ConfigError(f"train.effective_batch {t.effective_batch} is not a multiple of "
                              f"batch_size x processes = {per_step}")
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1, got {cfg.threads}")
    if cfg.data.eval_limit is not None and cfg.data.eval_limit < 1:
        raise ConfigError(f"data.eval_limit must be >= 1 (or null for all prompts), "
                          f"got {cfg.data.eval_limit}")
    if not re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", cfg.device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if cfg.train.method not in ("lora", "full"):
        raise ConfigError(f"train.method must be 'lora' or 'full', got {cfg.train.method!r}")
    if cfg.train.template not in ("alpaca", "chat"):
        raise ConfigError(f"train.template must be 'alpaca' or 'chat', got {cfg.train.template!r}")
    g = cfg.generate
    if g.backend not in ("hf", "vllm"):
        raise ConfigError(f"generate.backend must be 'hf' or 'vllm', got {g.backend!r}")
    if g.dtype not in ("auto", "float32", "float", "bfloat16", "float16", "half"):
        raise ConfigError(f"generate.dtype must be auto, float32, bfloat16 or float16, got {g.dtype!r}")
    if g.batch_size < 1 or g.max_new_tokens < 1:
        raise ConfigError(f"generate.batch_size and generate.max_new_tokens must be >= 1, got "
                          f"{g.batch_size} and {g.max_new_tokens}")
    if g.tensor_parallel_size < 1:
        raise ConfigError("generate.tensor_parallel_size must be >= 1")
    if not (0.0 < g.gpu_memory_utilization <= 1.0):
        raise ConfigError("generate.gpu_memory_utilization must be in (0, 1]")
    if g.kv_cache_gb is not None and g.kv_cache_gb <= 0:
        raise ConfigError("generate.kv_cache_gb must be positive (or null for the default)")
    if cfg.data.pool_size is not None and cfg.data.pool_size <= 0:
        raise ConfigError("data.pool_size must be positive")


# --------------------------------------------------------------------------- docs
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its documentation in the dataclass source: the string right after the
    field, else the comment at the end of its line (what ``--help`` shows)."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = ast.parse(src).body[0].body
    docs = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) \
                and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
        elif node.end_lineno in comments:
            docs[node.target.id] = comments[node.end_lineno]
    return docs


def key_doc(path: str, root: type | None = None) -> str:
    """The documentation of a dotted config key (``train.learning_rate``), "" if none."""
    cls = root or RunConfig
    parts = path.split(".")
    for part in parts[:-1]:
        tp = typing.get_type_hints(cls).get(part)
        if tp is None or not is_dataclass(tp):
            return ""
        cls = tp
    return field_docs(cls).get(parts[-1], "")


def all_keys(cls: type | None = None, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type name, default, doc) of every config key, nested dataclasses expanded."""
    cls = cls or RunConfig
    out = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    inst = cls()
    for f in fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if is_dataclass(tp):
            out += all_keys(tp, key + ".")
        else:
            out.append((key, _type_name(tp) if not typing.get_origin(tp) else str(tp).replace("typing.", ""),
                        to_dict(getattr(inst, f.name)), docs.get(f.name, "")))
    return out


# --------------------------------------------------------------------------- hashing
def stable_hash(*parts: Any, n: int = 8) -> str:
    """First n hex chars of sha256 over sorted JSON of the parts plus CACHE_VERSION."""
    blob = json.dumps([to_dict(p) for p in parts] + [CACHE_VERSION], sort_keys=True,
                      default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)


def grad_accum_for(train: TrainConfig, processes: int) -> int:
    """Gradient accumulation steps giving ``train.effective_batch`` on `processes` processes."""
    if train.effective_batch is None:
        return train.grad_accum
    return train.effective_batch // (train.batch_size * processes)


def resolved_train(train: TrainConfig, processes: int, device: str) -> dict:
    """What the train stage's cache key hashes: every training quantity as resolved for this
    run, so two recipes that train different weights never share a key. The effective batch
    (per-device batch x accumulation x processes) replaces its split (the same examples per
    optimizer step give the same updates, tested to 1e-4 with 2 gloo processes), and
    ``precision: auto`` is replaced by what it means on ``device``."""
    d = to_dict(train)
    d["effective_batch"] = train.batch_size * grad_accum_for(train, processes) * processes
    d["grad_accum"] = d["batch_size"] = None
    d["precision"] = resolve_precision(train.precision, device)
    return d


def configs_root() -> Path:
    """The shipped configs folder: ``selbench/configs`` inside the installed package (a link
    to the repository's ``configs/`` in a source checkout, a copy in a wheel)."""
    return Path(__file__).resolve().parent / "configs"
