"""Training pools (Alpaca format) and evaluation prompt sets.

A pool row is ``{"id", "instruction", "input", "output"}``; ``id`` is a stable content hash
of the three text fields, so the same example keeps its id across files and samples.

Validation (every row): the file must be UTF-8 JSON (a list of objects) or JSONL; each row
must be an object with string ``instruction`` and ``output`` (``input`` is optional and
defaults to ""). Anything else raises :class:`PoolError` naming file, row and field.
Documented skips, counted in :attr:`Pool.skipped`: rows whose output is empty or blank, and
exact duplicate rows (the first occurrence is kept).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .registry import Registry

ENV_DATA_DIR = "SELBENCH_DATA_DIR"

@dataclass(frozen=True)
class KnownPool:
    """A pool selbench knows by name. The name means exactly this data set: a local file is
    used only if it is one of `local_files` and has at least `min_rows` rows; otherwise the
    hub id is tried; offline without either, an error says what to download."""

    name: str
    local_files: tuple[str, ...]  # relative to the data dir
    hub_id: str | None
    expected_rows: int
    min_rows: int
    note: str = ""  # provenance/bias, carried into every result that uses the pool


KNOWN_POOLS: dict[str, KnownPool] = {p.name: p for p in [
    KnownPool("alpaca", ("train/alpaca_data.json",), "tatsu-lab/alpaca", 52002, 51000),
    KnownPool("alpaca-gpt4", ("train/alpaca_gpt4_data.json",), "vicgalle/alpaca-gpt4",
              52002, 51000),
    KnownPool("alpaca-gpt4-partial", ("train/alpaca_gpt4_partial.json",), None, 9955, 9955,
              note="PARTIAL Alpaca-GPT4: 9,955 of 52,002 rows (19.1%), the union of three "
                   "public samples, mostly the low-score half of Nuggets' split; subsets and "
                   "PWS are not comparable to the full 52k pool"),
]}


class PoolError(ValueError):
    """Bad training-pool input; the message names file, row (1-based) and field."""


class DataNotFound(FileNotFoundError):
    pass


@dataclass
class Pool:
    name: str
    rows: list[dict[str, str]]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)
    note: str = ""  # provenance / bias of a known pool (e.g. partial), shown in results
    sampled_from: int | None = None  # usable rows the seeded sample was drawn from
    corruption: dict | None = None  # the record of planted corruption (data.corrupt), if any

    def describe(self) -> str:
        """Where the rows come from and what was skipped, in the file, said as such."""
        skipped = {k: v for k, v in self.skipped.items() if v}
        skip = f"; the file's skipped rows: {skipped}" if skipped else ""
        if self.sampled_from is not None:
            return (f"{len(self)} examples, a seeded sample of the {self.sampled_from:,} usable "
                    f"rows of {self.source}{skip} (none skipped in the sample)")
        return f"{len(self)} examples from {self.source}" + (f" (skipped {skipped})" if skipped else "")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]

    def subset(self, indices) -> "Pool":
        return Pool(self.name, [self.rows[i] for i in indices], self.source, dict(self.skipped),
                    self.note)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for r in self.rows:
            h.update(r["id"].encode())
        return h.hexdigest()[:16]


def content_id(instruction: str, input_: str, output: str) -> str:
    blob = json.dumps([instruction, input_, output], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def resolve_data_dir(data_dir: str | None) -> Path | None:
    d = data_dir or os.environ.get(ENV_DATA_DIR)
    if not d:
        return None
    p = Path(d).expanduser().resolve()
    if not p.is_dir():
        raise DataNotFound(f"data directory {p} does not exist (from "
                           f"{'config/--data-dir' if data_dir else ENV_DATA_DIR})")
    return p


# --------------------------------------------------------------------------- reading
def _read_records(path: Path) -> list[tuple[int, Any]]:
    """Return (row number, parsed object) for a .json list or a .jsonl file."""
    try:
        st = path.stat()
    except OSError as e:
        raise PoolError(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise PoolError(f"{path}: is a directory; give a .json or .jsonl file")
    if not stat.S_ISREG(st.st_mode):
        raise PoolError(f"{path}: not a regular file (a FIFO, socket or device); give a "
                        f".json or .jsonl file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PoolError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PoolError(f"{path}: not UTF-8 text (byte {e.start}, line {line}): "
                        f"re-encode the file as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise PoolError(f"{path}: the file is empty")
    stripped = text.lstrip()
    if path.suffix == ".jsonl" or (not stripped.startswith("[") and path.suffix != ".json"):
        out = numbered_jsonl(text.splitlines(), path, PoolError, "row", column=True,
                             nested="nested too deeply to be a pool row")
        if not out:
            raise PoolError(f"{path}: the file has no rows")
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PoolError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise PoolError(f"{path}: nested too deeply to be a pool (a list of flat objects)") from None
    if not isinstance(data, list):
        raise PoolError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    if not data:
        raise PoolError(f"{path}: the file has no rows")
    return [(i, r) for i, r in enumerate(data, 1)]


def validate_rows(records: list[tuple[int, Any]], where: str,
                  row_label: str = "row") -> tuple[list[dict], dict[str, int]]:
    rows, seen = [], set()
    skipped = {"empty_output": 0, "duplicate": 0}
    for n, rec in records:
        if not isinstance(rec, dict):
            raise PoolError(f"{where}: {row_label} {n}: expected an object, got {type(rec).__name__}")
        for key in ("instruction", "output"):
            if key not in rec:
                raise PoolError(f"{where}: {row_label} {n}: missing field '{key}'")
        vals = {}
        for key in ("instruction", "input", "output"):
            v = rec.get(key, "")
            if v is None and key == "input":
                v = ""
            if not isinstance(v, str):
                raise PoolError(f"{where}: {row_label} {n}: field '{key}' must be a string, "
                                f"got {type(v).__name__} ({str(v)[:40]!r})")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                raise PoolError(f"{where}: {row_label} {n}: field '{key}' is not valid Unicode "
                                f"text (a lone surrogate {v[e.start]!r} at character {e.start})") from None
            vals[key] = v
        if not vals["instruction"].strip():
            raise PoolError(f"{where}: {row_label} {n}: field 'instruction' is empty")
        if not vals["output"].strip():
            skipped["empty_output"] += 1
            continue
        cid = content_id(vals["instruction"], vals["input"], vals["output"])
        if cid in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(cid)
        rows.append({"id": cid, **vals})
    if not rows:
        raise PoolError(f"{where}: no usable rows (skipped: {skipped})")
    return rows, skipped


_ROLE_KEYS = (("role", "content"), ("from", "value"))
_USER = {"user", "human"}
_ASSISTANT = {"assistant", "gpt", "model"}


def map_columns(rec: Any, columns: dict[str, str]) -> Any:
    """One record in selbench's layout: renamed columns (``columns`` maps our field to the
    file's), or a chat ``messages``/``conversations`` list (first user turn -> instruction,
    the assistant turn after it -> output). Anything else is passed on unchanged for
    validation to name what is wrong."""
    if not isinstance(rec, dict):
        return rec
    if columns:
        out = {ours: rec.get(theirs) for ours, theirs in columns.items()}
        for k in ("instruction", "input", "output"):
            if k not in columns and k in rec:
                out[k] = rec[k]
        rec = out
    turns = rec.get("messages", rec.get("conversations")) if "instruction" not in rec else None
    if isinstance(turns, list):
        user = assistant = None
        for t in turns:
            if not isinstance(t, dict):
                continue
            for rk, ck in _ROLE_KEYS:
                if rk in t:
                    role, content = str(t[rk]).lower(), t.get(ck)
                    if user is None and role in _USER:
                        user = content
                    elif user is not None and assistant is None and role in _ASSISTANT:
                        assistant = content
        if user is not None:
            return {"instruction": user, "input": "", "output": assistant if assistant is not None else ""}
    return rec


def load_pool(path_or_id: str, data_dir: str | None = None, size: int | None = None,
              seed: int = 0, columns: dict[str, str] | None = None) -> Pool:
    """Load an Alpaca-format pool from a known name, a local .json/.jsonl, or a hub id.

    ``size`` takes a seeded random sample (kept in the pool's original order).
    """
    name = path_or_id
    local: Path | None = None
    hub_id: str | None = None
    known = KNOWN_POOLS.get(name)
    if known is not None:
        local = find_known_local(known, data_dir)
        hub_id = known.hub_id
        if local is None and hub_id is None:
            dd = resolve_data_dir(data_dir)
            raise DataNotFound(f"pool '{name}': {known.local_files[0]} not found under "
                               f"{dd or '(no data dir)'}; pass --data-dir or set {ENV_DATA_DIR}")
    elif Path(name).expanduser().exists():
        local = Path(name).expanduser().resolve()
    elif name.endswith((".json", ".jsonl")):
        raise DataNotFound(f"pool file not found: {name}")
    else:
        hub_id = name
    if local is not None:
        records = [(n, map_columns(r, columns or {})) for n, r in _read_records(local)]
        rows, skipped = validate_rows(records, str(local))
        source = str(local)
    else:
        rows, skipped = _load_hub(hub_id, name, columns or {})
        source = f"hf://{hub_id}"
    if known is not None:
        n_read = len(rows) + sum(skipped.values())
        if n_read < known.min_rows:
            raise PoolError(f"pool '{name}' from {source}: {n_read} rows, but '{name}' has "
                            f"{known.expected_rows:,}; this file is partial, so the name would "
                            f"not mean what it says (use the full file, or the data as a path)")
    pool = Pool(name=Path(name).stem if local is not None and known is None else name,
                rows=rows, source=source, skipped=skipped, note=known.note if known else "")
    if size is not None and size < len(pool):
        idx = sorted(random.Random(seed).sample(range(len(pool)), size))
        usable = len(pool)
        pool = pool.subset(idx)
        pool.sampled_from = usable
    return pool


def find_known_local(known: KnownPool, data_dir: str | None) -> Path | None:
    dd = resolve_data_dir(data_dir)
    if dd is None:
        return None
    for rel in known.local_files:
        if (dd / rel).is_file():
            return dd / rel
    return None


def _load_hub(hub_id: str, name: str, columns: dict[str, str] | None = None) -> tuple[list[dict], dict[str, int]]:
    try:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise ConnectionError("HF_HUB_OFFLINE is set")
        import datasets

        ds = datasets.load_dataset(hub_id, split="train")
    except Exception as e:  # noqa: BLE001 - offline, missing, gated...
        hint = ""
        if name in KNOWN_POOLS:
            kp = KNOWN_POOLS[name]
            hint = (f" Either go online (the hub dataset '{hub_id}'), or download the full "
                    f"file and put it at <data dir>/{kp.local_files[0]} (--data-dir or "
                    f"{ENV_DATA_DIR}).")
            if name == "alpaca-gpt4":
                hint += (" The shared data holds only a 19% partial file: use "
                         "--pool alpaca-gpt4-partial to run on it knowingly.")
        raise DataNotFound(f"pool '{name}': no local file and the hub dataset '{hub_id}' "
                           f"could not be loaded ({type(e).__name__}: {str(e)[:200]}).{hint}") from None
    return validate_rows([(i, map_columns(dict(r), columns or {})) for i, r in enumerate(ds, 1)],
                         f"hf://{hub_id}")


# --------------------------------------------------------------------------- eval sets
@dataclass
class EvalSet:
    name: str
    file: str  # relative to the data dir
    get_id: Callable[[dict], str]
    get_prompt: Callable[[dict], str]
    reference_file: str | None = None  # reference answers (field 'answer'), same order/ids
    default: bool = False
    size: int | None = None  # prompts in the shipped file (plans before the data is here)


EVAL_SETS: Registry[EvalSet] = Registry("eval set")


def _register_eval(es: EvalSet, *aliases: str) -> None:
    EVAL_SETS.add(es.name, es, *aliases)


def _sinstruct_prompt(r: dict) -> str:
    inst = r["instruction"]
    inputs = [x.get("input", "") for x in r.get("instances", []) if x.get("input")]
    return f"{inst}\n\n{inputs[0]}" if inputs else inst


def _lima_prompt(r: dict) -> str:
    c = r["conversations"]
    return c[0] if isinstance(c, list) else c


_REF = "reference_answers/diverseevol_gpt35_turbo_0624/"
_register_eval(EvalSet("wizardlm", "eval_prompts/wizardlm_test_set.jsonl", lambda r: str(r["idx"]),
                       lambda r: r["Instruction"], _REF + "wizardlm_test_gpt35_0624.jsonl", True, 218))
_register_eval(EvalSet("vicuna", "eval_prompts/vicuna_test_set.jsonl",
                       lambda r: str(r["question_id"]), lambda r: r["text"],
                       _REF + "vicuna_test_gpt35_0624.jsonl", True, 80))
_register_eval(EvalSet("koala", "eval_prompts/koala_test_set.jsonl", lambda r: str(r["id"]),
                       lambda r: r["prompt"], _REF + "koala_test_gpt35_0624.jsonl", size=180))
_register_eval(EvalSet("lima", "eval_prompts/lima_test_set.jsonl", None, _lima_prompt, size=300))  # type: ignore[arg-type]
_register_eval(EvalSet("sinstruct", "eval_prompts/sinstruct_test_set.jsonl",
                       lambda r: str(r["id"]), _sinstruct_prompt, size=252), "self-instruct")


def expected_eval_size(name: str, limit: int | None = None) -> int | None:
    """Prompts a registered eval set has (cut to ``limit``), known without its file; None for
    a user's own file."""
    es = EVAL_SETS.get(name) if name in EVAL_SETS else None
    n = es.size if es is not None else None
    return None if n is None else (min(n, limit) if limit else n)


def numbered_jsonl(lines, path, error: type[Exception], unit: str = "row",
                   column: bool = False, nested: str = "nested too deeply") -> list[tuple[int, Any]]:
    """(line number, value) for every non-blank line; a bad line raises ``error`` naming the
    file and the line (``unit`` names it: row, line), with the column when ``column``; a
    value nested past Python's recursion limit raises ``error`` with ``nested``."""
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line)))
        except json.JSONDecodeError as e:
            at = f" at column {e.colno}" if column else ""
            raise error(f"{path}: {unit} {i}: invalid JSON ({e.msg}{at})") from None
        except RecursionError:
            raise error(f"{path}: {unit} {i}: {nested}") from None
    return out


def parse_jsonl(lines, path, error: type[Exception], unit: str = "row") -> list:
    """One JSON value per non-blank line; a bad line raises ``error`` naming file and line."""
    return [v for _, v in numbered_jsonl(lines, path, error, unit)]


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return parse_jsonl(f, path, PoolError)


PROMPT_FIELDS = ("prompt", "instruction", "question", "text", "Instruction")
ID_FIELDS = ("id", "question_id", "idx")
REFERENCE_FIELDS = ("reference", "answer", "output")


def load_custom_eval_set(path: Path, limit: int | None = None) -> list[dict]:
    """A user's eval set from a JSONL file: per row a prompt (``prompt``, ``instruction``,
    ``question`` or ``text``), an optional id (``id``/``question_id``/``idx``, else the row
    number) and an optional reference answer (``reference``/``answer``/``output``)."""
    items, seen = [], set()
    for n, r in enumerate(_read_jsonl(path), 1):
        if not isinstance(r, dict):
            raise PoolError(f"{path}: row {n}: expected an object")
        prompt = next((r[f] for f in PROMPT_FIELDS if isinstance(r.get(f), str) and r[f].strip()), None)
        if prompt is None:
            raise PoolError(f"{path}: row {n}: no prompt field (one of {', '.join(PROMPT_FIELDS)})")
        pid = str(next((r[f] for f in ID_FIELDS if f in r), n))
        if pid in seen:
            raise PoolError(f"{path}: row {n}: duplicate id {pid!r}")
        seen.add(pid)
        it = {"id": pid, "prompt": prompt}
        ref = next((r[f] for f in REFERENCE_FIELDS if isinstance(r.get(f), str)), None)
        if ref is not None:
            it["reference"] = ref
        items.append(it)
    if not items:
        raise PoolError(f"{path}: the eval set has no rows")
    return items[:limit] if limit else items


def eval_set_name(name: str) -> str:
    """The name an eval set is reported under (a custom file: its stem)."""
    return Path(name).stem if name.endswith(".jsonl") else name


def load_eval_set(name: str, data_dir: str | None = None, limit: int | None = None) -> list[dict]:
    """Return ``[{"id", "prompt", "reference"?}]`` for a registered eval set or a JSONL path."""
    if name.endswith(".jsonl"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise DataNotFound(f"eval set file not found: {name}")
        return load_custom_eval_set(path, limit)
    es = EVAL_SETS.get(name)
    dd = resolve_data_dir(data_dir)
    if dd is None or not (dd / es.file).exists():
        raise DataNotFound(f"eval set '{es.name}': {es.file} not found under "
                           f"{dd or '(no data dir)'}; pass --data-dir or set {ENV_DATA_DIR}")
    rows = _read_jsonl(dd / es.file)
    items = []
    for i, r in enumerate(rows):
        try:
            pid = es.get_id(r) if es.get_id else str(i)
            prompt = es.get_prompt(r)
        except (KeyError, IndexError, TypeError) as e:
            raise PoolError(f"{dd / es.file}: row {i + 1}: missing field {e}") from None
        items.append({"id": pid, "prompt": prompt})
    if es.reference_file and (dd / es.reference_file).exists():
        refs = _read_jsonl(dd / es.reference_file)
        if len(refs) == len(items):
            for it, ref in zip(items, refs):
                if es.get_prompt(ref) == it["prompt"]:
                    it["reference"] = ref.get("answer", "")
    return items[:limit] if limit else items
