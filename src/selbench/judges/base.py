"""Judge interface, judge YAML loading, and the per-item completion cache.

A judge is a YAML file (``configs/judges/<name>.yaml``, or any path) whose ``type`` picks a
backend registered in JUDGE_TYPES; the remaining keys fill that backend's config dataclass
(unknown keys are errors). Backends turn a list of :class:`JudgeItem` into raw completion
texts; parsing happens separately (``bench judge --reparse`` re-parses cached completions).

Cache: one JSONL per judge, one line per item, keyed by sha256 of (judge config without
secrets, prompt version, question, answer 1, answer 2). Each entry is appended as soon as
its completion arrives, as one whole ASCII line (``ensure_ascii``: any string the API
returns, lone surrogates included, is stored escaped) in a single write under a file lock,
then flushed and fsynced, so a crash never pays for a finished item twice. Opening the
cache repairs a torn last line (a crash or a full disk during an append): the fragment is
dropped and the next entry starts on a fresh line. A full disk during an append truncates
the partial line away and raises :class:`~selbench.runs.DiskFull` naming the file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import ConfigError, from_dict, safe_component, to_dict
from ..registry import Registry, suggest
from ..runs import DiskFull, file_lock, is_disk_full
from .prompts import PROMPT_VERSION, load_prompt

REPO_JUDGES = Path(__file__).resolve().parents[1] / "configs" / "judges"  # package data
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

        self.prompt = load_prompt(getattr(config, "prompt_file", None), source)
        self.stats = {"calls": 0, "retries": 0, "errors": 0, "prompt_tokens": 0,
                      "completion_tokens": 0}

    def cache_identity(self) -> dict[str, Any]:
        d = to_dict(self.config)
        return {"type": self.registry_name, "prompt": self.prompt.version,
                **{k: v for k, v in d.items() if k not in SECRET_KEYS and k not in self.volatile_keys()}}

    def volatile_keys(self) -> set[str]:
        """Config keys that do not change verdicts (excluded from the cache key)."""
        return {"concurrency", "timeout", "max_retries", "price_per_mtok_prompt", "prompt_file",
                "price_per_mtok_completion", "backoff_base", "backoff_max", "price_source"}

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

    def needs(self) -> list[tuple[str, str]]:
        """What this judge needs that may be missing here, as (plan problem kind, message):
        an API key, a server, a model. Each backend answers for itself; the plan only
        collects the answers."""
        return []

    @property
    def judge_model(self) -> str:
        return getattr(self.config, "model", self.registry_name)


JUDGE_TYPES: Registry[type[Judge]] = Registry("judge type")


def judge_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(REPO_JUDGES.glob("*.yaml"))} if REPO_JUDGES.is_dir() else {}


def load_judge(name_or_path: str) -> Judge:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        known = judge_paths()
        if name_or_path not in known:
            raise ConfigError(f"unknown judge '{name_or_path}'{suggest(name_or_path, known, n=2)} (known: {', '.join(known)}; "
                              f"or pass a judge YAML path)")
        path = known[name_or_path]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid judge YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if "type" not in data:
        raise ConfigError(f"{path}: missing 'type' ({', '.join(JUDGE_TYPES.names())})")
    cls = JUDGE_TYPES.get(data.pop("type"))
    # the name becomes a folder (runs/<experiment>/judge/<name>/): one safe path component
    name = safe_component(str(data.pop("name", path.stem)), f"{path}: judge name")
    cfg = from_dict(cls.config_cls, data, where=str(path))
    return cls(name, cfg, str(path))


def item_key(judge: Judge, item: JudgeItem) -> str:
    blob = json.dumps([judge.cache_identity(), item.question, item.answer_1, item.answer_2,
                       item.reference if judge.kind == "offline" else None], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class CompletionCache:
    """Append-only JSONL of raw completions keyed by item hash (last line for a key wins)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        self.bad_lines = 0  # unreadable lines skipped (their items are redone)
        self.repaired = 0  # bytes of a torn last line dropped on open
        with self._file_lock():
            self._repair_tail()
            if self.path.exists():
                with self.path.open("rb") as f:
                    for raw in f:
                        try:
                            e = json.loads(raw.decode("utf-8"))
                        except (ValueError, RecursionError):
                            self.bad_lines += 1
                            continue
                        if isinstance(e, dict) and e.get("text") is not None and "key" in e:
                            self.entries[e["key"]] = e

    def _file_lock(self):
        return file_lock(self.path.with_name(f".{self.path.name}.lock"))

    def _repair_tail(self) -> None:
        """Drop a torn last line (no trailing newline) so the next append starts fresh."""
        if not self.path.exists():
            return
        with self.path.open("rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # find the last newline
            pos, chunk = size, 1 << 16
            cut = 0
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                buf = f.read(pos - start)
                i = buf.rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                    break
                pos = start
            f.seek(cut)
            tail = f.read()
            try:
                json.loads(tail.decode("utf-8"))
                f.seek(size)
                f.write(b"\n")  # a whole entry that only lacks its newline: keep it
            except (ValueError, RecursionError):
                f.truncate(cut)
                self.repaired = size - cut
            f.flush()
            os.fsync(f.fileno())

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, completion: Completion, meta: dict) -> None:
        entry = {"key": key, "text": completion.text, "usage": completion.usage, **meta}
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")
        with self._lock, self._file_lock():
            self._append(line)
            self.entries[key] = entry

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            if start:  # another writer's torn tail: start on a fresh line
                with self.path.open("rb") as f:
                    f.seek(start - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            try:
                view = memoryview(line)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)  # no torn line left behind
                if is_disk_full(e):
                    raise DiskFull(errno.ENOSPC, f"no space left on device while appending to "
                                                 f"the judge cache {self.path}; free space and "
                                                 f"rerun (every entry written so far is kept)") from None
                raise OSError(e.errno, f"cannot append to the judge cache {self.path}: "
                                       f"{e.strerror or e}") from None
        finally:
            os.close(fd)
