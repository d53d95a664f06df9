"""The proxy ensemble's settings: one dataclass, the cache key of the gradient profile."""
from __future__ import annotations

from dataclasses import dataclass

from ...config import ConfigError, stable_hash, to_dict


@dataclass
class ProfileConfig:
    """Proxy ensemble + recording settings; the profile cache key is this dataclass."""

    proxy: str = "smollm2-135m-instruct"
    members: int = 5
    epochs: int = 2
    learning_rate: float = 5e-5
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: list[str] | None = None  # None = attention q/k/v (c_attn on GPT-2)
    batch_size: int = 16
    max_length: int = 256
    template: str = "alpaca"
    precision: str = "fp32"
    """fp32 | bf16 | auto (bf16 where the device has it natively). bf16 autocast is faster
    but makes the norms 0.2-5% noisy per example, which the variance term amplifies: fp32
    is the default; the resolved value is part of the profile key."""
    record: str = "pass"  # pass (at theta_e, eval mode; eqs. 1-2) | train (free, during updates)
    projection_dim: int = 1024  # projected per-example gradients for SPICE (0 = none)
    projection: str = "countsketch"
    seed: int | None = None  # member inits and data orders; None = the run seed

    def __post_init__(self):
        if self.record not in ("pass", "train"):
            raise ConfigError(f"profile.record must be 'pass' or 'train', got {self.record!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"profile.precision must be fp32, bf16 or auto, got {self.precision!r}")


def tiny_profile_params(tiny_model: str, **extra) -> dict:
    """Profile settings that make a proxy-based selector cheap in tests (contract test)."""
    return {"profile": {"proxy": tiny_model, "members": 2, "epochs": 2, "batch_size": 4,
                        "max_length": 64, "learning_rate": 1e-2, "projection_dim": 64, **extra}}


def profile_key_name(cfg: ProfileConfig, seed: int | None = None) -> str:
    """How the plan names one shared profile (selectors with equal configs and seed share it)."""
    s = cfg.seed if cfg.seed is not None else seed
    return f"profile of {cfg.proxy} [{stable_hash(to_dict(cfg), s, n=6)}]"
