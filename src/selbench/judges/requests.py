"""The request shape of an OpenAI-compatible chat judge, per API family, in one place.

- ``chat``: chat models and OpenAI-compatible servers (gpt-4o/4.1, vLLM, llama.cpp):
  ``temperature`` (0.0 = greedy unless set) and ``max_tokens``.
- ``reasoning``: OpenAI reasoning models (GPT-5.x, o1/o3/o4). They answer HTTP 400 to
  ``max_tokens`` (the budget is ``max_completion_tokens``, reasoning tokens included) and to
  any temperature but the default, so none is sent; ``reasoning_effort`` is optional.

``family: auto`` picks ``reasoning`` for OpenAI's own endpoint and a model name of those
series (``gpt-5*`` except ``*-chat*``, ``o1*``, ``o3*``, ``o4*``), else ``chat``. The resolved
parameters (all but the messages) are part of the judge's cache identity: changing any of
them re-judges, and nothing else does.
"""
from __future__ import annotations

import re
from typing import Any

from ..config import ConfigError

FAMILIES = ("auto", "chat", "reasoning")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_REASONING_MODEL = re.compile(r"^(gpt-5(?!.*-chat)|o1|o3|o4)", re.I)


def resolve_family(model: str, base_url: str | None, family: str) -> str:
    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if family != "auto":
        return family
    return "reasoning" if base_url is None and _REASONING_MODEL.match(model) else "chat"


def request_params(cfg: Any, where: str = "judge") -> dict[str, Any]:
    """Everything sent besides ``messages``, for an :class:`OpenAIJudgeConfig`. Raises
    :class:`ConfigError` (naming `where`, the YAML) for a combination the API rejects."""
    fam = resolve_family(cfg.model, cfg.base_url, cfg.family)
    if cfg.max_tokens is not None and cfg.max_tokens < 1:
        raise ConfigError(f"{where}: max_tokens must be >= 1, got {cfg.max_tokens}")
    if fam == "reasoning":
        if cfg.temperature is not None and cfg.temperature != 1.0:
            raise ConfigError(
                f"{where}: model '{cfg.model}' is a reasoning model: the API accepts only the "
                f"default temperature; remove `temperature` from the YAML (or set family: chat "
                f"if this model is not a reasoning model)")
        params: dict[str, Any] = {"model": cfg.model, "max_completion_tokens": cfg.max_tokens}
        if cfg.reasoning_effort is not None:
            if cfg.reasoning_effort not in REASONING_EFFORTS:
                raise ConfigError(f"{where}: reasoning_effort must be one of "
                                  f"{', '.join(REASONING_EFFORTS)}, got {cfg.reasoning_effort!r}")
            params["reasoning_effort"] = cfg.reasoning_effort
        return params
    if cfg.reasoning_effort is not None:
        raise ConfigError(f"{where}: reasoning_effort is only sent to reasoning models "
                          f"(family: reasoning); model '{cfg.model}' resolves to family 'chat'")
    temp = 0.0 if cfg.temperature is None else cfg.temperature
    return {"model": cfg.model, "temperature": temp, "max_tokens": cfg.max_tokens}
