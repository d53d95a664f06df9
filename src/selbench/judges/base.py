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

Rescue files: answers that arrived but could not be appended (the disk filled up while
judging; see :func:`selbench.judges.stage.judge_items`) are written, whole or not at all,
to a rescue file next to the cache (``.cache.jsonl.rescue-*.jsonl``) or, when that disk is
full too, under ``$SELBENCH_RESCUE_DIR`` (default ``<temp dir>/selbench-rescue``, named by
a hash of the cache path). Opening the cache reads every rescue file of it back, appends
the entries it lacks and deletes the rescue files once they are stored, so an answer that
was paid for is never asked again.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, from_dict, read_yaml, safe_component, to_dict
from ..registry import Registry, suggest
from ..runs import DiskFull, file_lock, is_disk_full
from .prompts import PROMPT_VERSION, load_prompt, render

REPO_JUDGES = Path(__file__).resolve().parents[1] / "configs" / "judges"  # package data
SECRET_KEYS = {"api_key", "key", "token", "password"}
RESCUE_ENV = "SELBENCH_RESCUE_DIR"  # where rescue files go when the cache's disk is full


class StopRequests(Exception):
    """Raised by ``on_done`` (:meth:`Judge.complete_many`) when no further request may be
    sent: an answer could not be stored (a full disk). A backend honours it by starting no
    new request; answers already on their way are still handed to ``on_done`` (which keeps
    them without raising again), then it returns or re-raises. A backend that does nothing
    special stops where the exception leaves its loop."""


@dataclass
class JudgeItem:
    question: str
    answer_1: str  # shown first
    answer_2: str
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # A complete chat prompt ([{role, content}, ...]) to send instead of the judge's pairwise
    # prompt: single-prompt completions such as the AlpaGasus rating of one pool row. The
    # pairwise fields are then unused; the cache key is the messages (see item_key).
    messages: list[dict[str, str]] | None = None


@dataclass
class Completion:
    text: str | None
    usage: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Judge:
    """Base backend. Subclasses set config_cls and implement complete_many; a backend renders
    each item with :meth:`messages` (the pairwise prompt, or the item's own messages)."""

    config_cls: type = object
    kind = "llm"  # 'llm' | 'offline' (a non-LLM stand-in; named as such in every output)
    registry_name = "?"
    completes_prompts = True  # can complete an item's own messages (False: pairwise only)

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

    def messages(self, item: JudgeItem) -> list[dict[str, str]]:
        """The chat messages sent for ``item``: its own ``messages`` when it carries them
        (a single-prompt completion), else the judge's pairwise prompt filled in."""
        if item.messages is not None:
            if not self.completes_prompts:
                raise NotPromptable(f"judge '{self.name}' ({self.registry_name}) is not an LLM: "
                                    f"it can only compare two answers to a reference, not "
                                    f"complete a prompt of its own (e.g. rate a pool row); "
                                    f"use an LLM judge (hf, openai)")
            return item.messages
        return render(item.question, item.answer_1, item.answer_2, self.prompt)

    def complete_many(self, items: list[JudgeItem],
                      on_done: Callable[[int, Completion], None]) -> None:
        """Answer ``items``, calling ``on_done(index, completion)`` as each arrives. When
        ``on_done`` raises :class:`StopRequests`, send nothing new (see there)."""
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


class NotPromptable(ValueError):
    """The judge cannot complete an arbitrary prompt (the offline reference-similarity judge)."""


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
    data = read_yaml(path, "judge YAML") or {}  # bounded: an alias bomb is refused
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
    if item.messages is not None:  # its own prompt: the judge's pairwise prompt plays no part
        ident = {k: v for k, v in judge.cache_identity().items() if k != "prompt"}
        blob = json.dumps([ident, "messages", item.messages], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
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
            self.rescued = self._read_rescues()  # answers saved aside by a full disk

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

    # ------------------------------------------------------------------ rescue files
    def rescue_dirs(self) -> list[Path]:
        """Where rescue files go, in order: next to the cache, then ``$SELBENCH_RESCUE_DIR``
        (default ``<temp dir>/selbench-rescue``; another disk when the cache's is full)."""
        other = Path(os.environ.get(RESCUE_ENV) or Path(tempfile.gettempdir()) / "selbench-rescue")
        return [self.path.parent, other]

    def _rescue_prefix(self, folder: Path) -> str:
        if folder == self.path.parent:
            return f".{self.path.name}.rescue-"
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        return f"{digest}.rescue-"

    def rescue_files(self) -> list[Path]:
        out = []
        for d in self.rescue_dirs():
            with contextlib.suppress(OSError):
                out += sorted(d.glob(f"{self._rescue_prefix(d)}*.jsonl"))
        return out

    def save_rescue(self, entries: list[dict]) -> Path | None:
        """Write ``entries`` (cache lines) to a new rescue file, whole or not at all: the
        first of :meth:`rescue_dirs` that takes it. None when none can be written."""
        head = json.dumps({"rescue_of": str(self.path.resolve()), "entries": len(entries)},
                          ensure_ascii=True)
        data = ("\n".join([head, *(json.dumps(e, ensure_ascii=True) for e in entries)])
                + "\n").encode("ascii")
        for d in self.rescue_dirs():
            path = d / f"{self._rescue_prefix(d)}{os.getpid()}-{time.time_ns()}.jsonl"
            tmp = path.with_name(path.name + ".part")
            try:
                d.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
                return path
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        return None

    def _read_rescues(self) -> int:
        """Merge every rescue file of this cache (called under the file lock): entries it
        lacks are appended to the cache, then the rescue files are deleted. When the append
        fails, the entries are still used by this process and the files are kept."""
        files = self.rescue_files()
        if not files:
            return 0
        new: dict[str, dict] = {}
        for p in files:
            try:
                lines = p.read_bytes().splitlines()
            except OSError:
                continue
            for raw in lines:
                try:
                    e = json.loads(raw.decode("utf-8"))
                except (ValueError, RecursionError):
                    continue
                if (isinstance(e, dict) and isinstance(e.get("key"), str)
                        and e.get("text") is not None and e["key"] not in self.entries):
                    new.setdefault(e["key"], e)
        try:
            if new:
                self._append(b"".join((json.dumps(e, ensure_ascii=True) + "\n").encode("ascii")
                                      for e in new.values()))
        except OSError:
            self.entries.update(new)  # still full: used here, stored by a later run
            return len(new)
        self.entries.update(new)
        for p in files:
            with contextlib.suppress(OSError):
                p.unlink()
        return len(new)

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
