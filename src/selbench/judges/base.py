"""Judge interface, judge YAML loading, and the per-item completion cache.

A judge is a YAML file (``configs/judges/<name>.yaml``, or any path) whose ``type`` picks a
backend registered in JUDGE_TYPES; the remaining keys fill that backend's config dataclass
(unknown keys are errors). Backends turn a list of :class:`JudgeItem` into raw completion
texts; parsing happens separately (``bench judge --reparse`` re-parses cached completions).

Cache: one JSONL per judge, one line per item, keyed by sha256 of (judge config without
secrets, prompt version, question, answer 1, answer 2). Lines are appended and flushed as
soon as each completion arrives, so a crash never pays for a finished item twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import ConfigError, from_dict, to_dict
from ..registry import Registry
from .prompts import PROMPT_VERSION

REPO_JUDGES = Path(__file__).resolve().parents[3] / "configs" / "judges"
SECRET_KEYS = {"api_key", "key", "token", "password"}


@dataclass
class JudgeItem:
    question: str
    answer_1: str  # shown first
    answer_2: str
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    text: str | None
    usage: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Judge:
    """Base backend. Subclasses set config_cls and implement complete_many."""

    config_cls: type = object
    kind = "llm"  # 'llm' | 'offline' (a non-LLM stand-in; named as such in every output)
    registry_name = "?"

    def __init__(self, name: str, config, source: str | None = None):
        self.name = name
        self.config = config
        self.source = source  # the YAML it was loaded from (named in errors)
        self.stats = {"calls": 0, "retries": 0, "errors": 0, "prompt_tokens": 0,
                      "completion_tokens": 0}

    def cache_identity(self) -> dict[str, Any]:
        d = to_dict(self.config)
        return {"type": self.registry_name, "prompt": PROMPT_VERSION,
                **{k: v for k, v in d.items() if k not in SECRET_KEYS and k not in self.volatile_keys()}}

    def volatile_keys(self) -> set[str]:
        """Config keys that do not change verdicts (excluded from the cache key)."""
        return {"concurrency", "timeout", "max_retries", "price_per_mtok_prompt",
                "price_per_mtok_completion", "backoff_base", "backoff_max"}

    def complete_many(self, items: list[JudgeItem],
                      on_done: Callable[[int, Completion], None]) -> None:
        raise NotImplementedError

    def cost(self, usage: dict) -> float | None:
        """USD for the given token usage from the YAML's optional price table."""
        pp = getattr(self.config, "price_per_mtok_prompt", None)
        pc = getattr(self.config, "price_per_mtok_completion", None)
        if pp is None and pc is None:
            return None
        return (usage.get("prompt_tokens", 0) * (pp or 0.0)
                + usage.get("completion_tokens", 0) * (pc or 0.0)) / 1e6

    def describe(self) -> str:
        return self.name


JUDGE_TYPES: Registry[type[Judge]] = Registry("judge type")


def judge_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(REPO_JUDGES.glob("*.yaml"))} if REPO_JUDGES.is_dir() else {}


def load_judge(name_or_path: str) -> Judge:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        known = judge_paths()
        if name_or_path not in known:
            import difflib

            close = difflib.get_close_matches(name_or_path, list(known), n=2)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"unknown judge '{name_or_path}'{hint} (known: {', '.join(known)}; "
                              f"or pass a judge YAML path)")
        path = known[name_or_path]
    data = yaml.safe_load(path.read_text()) or {}
    if "type" not in data:
        raise ConfigError(f"{path}: missing 'type' ({', '.join(JUDGE_TYPES.names())})")
    cls = JUDGE_TYPES.get(data.pop("type"))
    name = data.pop("name", path.stem)
    cfg = from_dict(cls.config_cls, data, where=str(path))
    return cls(name, cfg, str(path))


def item_key(judge: Judge, item: JudgeItem) -> str:
    blob = json.dumps([judge.cache_identity(), item.question, item.answer_1, item.answer_2,
                       item.reference if judge.kind == "offline" else None], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class CompletionCache:
    """Append-only JSONL of raw completions keyed by item hash (last line for a key wins)."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        if path.exists():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        e = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line torn by a crash: that item is simply redone
                    if e.get("text") is not None:
                        self.entries[e["key"]] = e

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, completion: Completion, meta: dict) -> None:
        entry = {"key": key, "text": completion.text, "usage": completion.usage, **meta}
        with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.entries[key] = entry
