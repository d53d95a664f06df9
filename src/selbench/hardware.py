"""What the machine can do: which device a process uses, and which precision ``auto`` means.

Rules, each in one place:

- **Device of a run**: ``device: auto`` is ``cuda`` when a CUDA GPU is visible, else ``cpu``.
  Whether a GPU is visible is first read from the driver's files (no torch import: ``bench
  ls`` and ``bench plan`` stay light on a CPU machine); only when a driver is present is
  torch asked.
- **Device of a launched rank**: every worker (train, IFD shards, profile members) uses
  :func:`rank_device`: on CUDA, local rank r runs on ``cuda:r`` (``torch.cuda.set_device``
  before anything is loaded); a local rank without its own GPU is an error, never a second
  process on GPU 0.
- **Precision** ``auto`` (training, proxy, generation): bf16 where the device computes it
  natively (a CUDA GPU with bf16, a CPU with ``avx512_bf16`` or AMX), fp32 otherwise (on an
  AVX2-only CPU bf16 is emulated: measured >20x slower than fp32). The resolved value is
  what stage keys hash and what the manifest records.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX BF16)."""
    f = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & set(f))


def cuda_driver_present() -> bool:
    """An NVIDIA driver with at least one GPU, read from its files (no torch import)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    return any(Path("/dev").glob("nvidia[0-9]*"))


def cuda_available() -> bool:
    if not cuda_driver_present():
        return False
    import torch  # lazy: heavy; only reached where an NVIDIA driver is present

    return bool(torch.cuda.is_available())


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    return "cuda" if cuda_available() else "cpu"


def cuda_bf16() -> bool:
    import torch  # lazy: heavy; callers checked that CUDA is there

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def native_bf16(device: str) -> bool:
    """Whether ``device`` (cpu, cuda, cuda:N) computes bf16 natively."""
    if device.startswith("cuda"):
        return cuda_available() and cuda_bf16()
    return cpu_native_bf16()


def resolve_precision(setting: str, device: str) -> str:
    """``auto`` -> ``bf16`` where native on ``device``, else ``fp32``; others unchanged."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {setting!r}")
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(device) else "fp32"


def torch_dtype_name(precision: str) -> str:
    return {"bf16": "bfloat16", "fp32": "float32"}[precision]


def describe() -> dict:
    """What the manifest records about the machine's precision support."""
    out = {"cpu_native_bf16": cpu_native_bf16(), "cuda_driver": cuda_driver_present()}

    if "torch" in sys.modules:  # never imported for this: only read when already loaded
        torch = sys.modules["torch"]
        try:
            out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        except Exception:  # noqa: BLE001 - an old torch
            pass
    return out


# --------------------------------------------------------------------------- launched ranks
class RankDeviceError(RuntimeError):
    pass


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def rank_device(device: str, cuda=None) -> str:
    """The device of this launched process: on CUDA, ``cuda:<local rank>`` after
    ``set_device`` (so that every later ``"cuda"`` means this rank's own GPU); a local rank
    with no GPU of its own is an error. ``cuda`` is ``torch.cuda`` (tests pass a stand-in)."""
    if not str(device).startswith("cuda"):
        return device
    if cuda is None:
        import torch  # lazy: heavy; a CUDA worker loads it anyway

        cuda = torch.cuda
    r = local_rank()
    n = cuda.device_count()
    if r >= n:
        raise RankDeviceError(f"local rank {r} has no GPU of its own ({n} visible): launch at "
                              f"most {n} processes per node (launch.num_processes)")
    cuda.set_device(r)
    return f"cuda:{r}"
