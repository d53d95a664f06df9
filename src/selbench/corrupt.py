"""Planted corruption: a copy of a pool where a known share of rows is broken on purpose.

:func:`corrupt_pool` changes ``round(fraction * N)`` rows of a pool, split as evenly as the
kinds allow, and returns the new rows (same length and order: row ``i`` of the copy is row
``i`` of the source, changed or not) with a record of exactly which rows it changed and
how. Everything is drawn from ``numpy.random.default_rng([seed, 4051])``, so one seed gives
one corrupted pool, whatever order the kinds are named in.

The kinds (``KINDS``; each changes only the row it is applied to):

- ``swap``: the responses of the swap rows are rotated among them (in a seeded order, row
  ``p[t]`` gets the response of row ``p[t+1]``, the last one the first one's): every
  response is still in the pool, attached to the wrong instruction. Needs >= 2 rows.
- ``truncate``: the response is cut to its first 1-3 whitespace words (drawn per row). Only
  rows whose response has at least 8 words are truncated.
- ``unrelated``: the response is replaced by the response of a clean row on another topic:
  among 32 seeded candidate clean rows, the one whose words (instruction, input and
  response, lower-cased, stop words left out) overlap least (Jaccard) with this row's
  instruction and input. The donor row stays as it was, so that response is in the pool
  twice.
- ``garbled``: the response's words in a random order, and the characters of every word of
  4+ characters shuffled: the same word count and the same characters, no language. Only
  rows with at least 5 response words.
- ``duplicate``: the row is replaced by a near-duplicate of a clean row (the same input and
  response; the instruction lower-cased, one inner space doubled, or its final ``.?!``
  dropped / a ``.`` added). Exact duplicates would be skipped when the pool is loaded
  (:mod:`selbench.data`), these survive it. The clean original stays in the pool and is
  counted clean: only the copy is corrupted.
- ``echo``: the response is the instruction itself (the input is not repeated). Only rows
  whose response differs from the instruction.
- ``refusal``: the response is a canned non-answer (one of ``REFUSALS``), as
  assistant-style data sometimes holds.

A row whose text does not change (a swap that hands a row an identical response), or whose
new content id would equal another row's (so that loading would skip it as a duplicate), is
left as it was and not recorded; the record counts both. Every row in the record differs
from its source; every row not in it is the source row, byte for byte.

Files: :func:`write_corrupted` writes the pool (``.json`` list or ``.jsonl``) and its record
next to it, ``<stem>.corruption.json`` (:func:`record_path_for`), and never replaces an
existing file. The record lists per changed row its position, new content id, original id,
kind and details, and the ids of every clean row, so a pool (or a sample of it) can be
checked against it row by row (:meth:`CorruptionRecord.kinds_of`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .data import Pool, PoolError, content_id
from .registry import suggest

RECORD_FORMAT = "selbench-corruption"
RECORD_VERSION = 1
RECORD_SUFFIX = ".corruption.json"
CLEAN = "clean"  # the label of an unchanged row in :meth:`CorruptionRecord.kinds_of`

TRUNCATE_MIN_WORDS = 8
TRUNCATE_KEEP = (1, 3)  # words kept, inclusive
GARBLE_MIN_WORDS = 5
UNRELATED_CANDIDATES = 32

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "As an AI, I am not able to complete this request.",
    "I don't know.",
    "Sorry, I cannot answer this question.",
    "I am unable to provide a response to this.",
)

_STOP = frozenset("a an the and or of to in on for with by is are was were be been it its this "
                  "that these those as at from into your you i we they he she them our their "
                  "my me can will would should could do does did not no yes if then than so "
                  "what which who how why when where there here all any some each".split())
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


@dataclass(frozen=True)
class Kind:
    name: str
    doc: str
    eligible: Callable[[dict], bool]


KINDS: dict[str, Kind] = {k.name: k for k in [
    # the order here is the order rows are assigned in (strictest eligibility first)
    Kind("truncate", f"response cut to its first {TRUNCATE_KEEP[0]}-{TRUNCATE_KEEP[1]} words "
                     f"(rows with >= {TRUNCATE_MIN_WORDS} response words)",
         lambda r: len(r["output"].split()) >= TRUNCATE_MIN_WORDS),
    Kind("garbled", "response words in random order, characters of words of 4+ characters "
                    f"shuffled (rows with >= {GARBLE_MIN_WORDS} response words)",
         lambda r: len(r["output"].split()) >= GARBLE_MIN_WORDS),
    Kind("echo", "response = the instruction (rows whose response differs from it)",
         lambda r: r["output"].strip() != r["instruction"].strip()),
    Kind("swap", "responses rotated among the swap rows (each gets another swap row's)",
         lambda r: True),
    Kind("unrelated", f"response of the clean row least word-overlapping with this "
                      f"instruction among {UNRELATED_CANDIDATES} seeded candidates",
         lambda r: True),
    Kind("duplicate", "near-duplicate of a clean row (instruction lower-cased, a space "
                      "doubled, or final punctuation changed; same input and response)",
         lambda r: True),
    Kind("refusal", "response = a canned non-answer (REFUSALS)", lambda r: True),
]}
KIND_NAMES = tuple(KINDS)


def parse_kinds(kinds) -> list[str]:
    """Kind names (a comma string or a list; ``all`` = every kind), in the canonical order."""
    if kinds is None:
        return list(KIND_NAMES)
    items = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds)]
    items = [k for k in items if k]
    if not items:
        raise ValueError(f"no corruption kind given (kinds: {', '.join(KIND_NAMES)})")
    if "all" in items:
        return list(KIND_NAMES)
    for k in items:
        if k not in KINDS:
            raise ValueError(f"unknown corruption kind {k!r}{suggest(k, KIND_NAMES)} "
                             f"(kinds: {', '.join(KIND_NAMES)}, or all)")
    return [k for k in KIND_NAMES if k in items]


def _garble(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    order = rng.permutation(len(words))
    out = []
    for i in order:
        w = words[i]
        if len(w) >= 4:
            w = "".join(w[j] for j in rng.permutation(len(w)))
        out.append(w)
    return " ".join(out)


def _near_duplicate(instruction: str, rng: np.random.Generator) -> tuple[str, str]:
    variants = []
    if instruction.lower() != instruction:
        variants.append(("lowercase", instruction.lower()))
    spaces = [m.start() for m in re.finditer(" ", instruction)]
    if spaces:
        at = spaces[int(rng.integers(len(spaces)))]
        variants.append(("double-space", instruction[:at] + " " + instruction[at:]))
    if instruction and instruction[-1] in ".?!":
        variants.append(("punctuation-dropped", instruction[:-1]))
    else:
        variants.append(("punctuation-added", instruction + "."))
    name, text = variants[int(rng.integers(len(variants)))]
    return name, text


def corrupt_pool(rows: list[dict], fraction: float = 0.3, kinds=None,
                 seed: int = 0) -> tuple[list[dict], dict]:
    """Corrupt ``round(fraction * len(rows))`` rows (see the module doc for the kinds).

    ``rows`` are pool rows (``instruction``, ``input``, ``output``; distinct content). Returns
    ``(new_rows, record)``: new rows with fresh ``id`` s, in the source order, and the record
    (a JSON-able dict; :class:`CorruptionRecord` reads it)."""
    if not isinstance(fraction, (int, float)) or not (0.0 < float(fraction) < 1.0):
        raise ValueError(f"corruption fraction must be in (0, 1), got {fraction!r}")
    names = parse_kinds(kinds)
    src = [{"instruction": r["instruction"], "input": r.get("input", "") or "",
            "output": r["output"]} for r in rows]
    n = len(src)
    orig_ids = [content_id(r["instruction"], r["input"], r["output"]) for r in src]
    if len(set(orig_ids)) != n:
        raise ValueError("corrupt_pool: the rows must be distinct (load them with "
                         "selbench.data.load_pool, which skips exact duplicates)")
    rng = np.random.default_rng([int(seed), 4051])
    n_target = int(round(float(fraction) * n))
    base, extra = divmod(n_target, len(names))
    requested = {k: base + (1 if i < extra else 0) for i, k in enumerate(names)}
    perm = [int(i) for i in rng.permutation(n)]
    used: set[int] = set()
    assigned: dict[str, list[int]] = {}
    for k in names:  # canonical order: strictest eligibility first
        take = []
        for i in perm:
            if len(take) >= requested[k]:
                break
            if i not in used and KINDS[k].eligible(src[i]):
                take.append(i)
                used.add(i)
        assigned[k] = take
    if "swap" in assigned and len(assigned["swap"]) < 2:
        used -= set(assigned["swap"])
        assigned["swap"] = []
    donors = np.array([i for i in range(n) if i not in used], dtype=np.int64)
    out = [dict(r) for r in src]
    changes: dict[int, tuple[str, dict]] = {}
    no_donor = 0
    for k in names:
        krng = np.random.default_rng([int(seed), 4051, KIND_NAMES.index(k)])
        pos = assigned[k]
        if k == "swap":
            for t, i in enumerate(pos):
                j = pos[(t + 1) % len(pos)]
                out[i]["output"] = src[j]["output"]
                changes[i] = (k, {"output_from": j, "output_from_id": orig_ids[j]})
        elif k == "truncate":
            for i in pos:
                words = src[i]["output"].split()
                keep = int(krng.integers(TRUNCATE_KEEP[0], TRUNCATE_KEEP[1] + 1))
                out[i]["output"] = " ".join(words[:keep])
                changes[i] = (k, {"words_kept": keep, "words_before": len(words)})
        elif k == "unrelated":
            for i in pos:
                mine = _words(src[i]["instruction"] + " " + src[i]["input"])
                cand = krng.choice(donors, size=min(UNRELATED_CANDIDATES, len(donors)),
                                   replace=False)
                best, best_j = 2.0, -1
                for j in (int(c) for c in cand):
                    if src[j]["output"] == src[i]["output"]:
                        continue
                    theirs = _words(" ".join((src[j]["instruction"], src[j]["input"],
                                              src[j]["output"])))
                    union = mine | theirs
                    overlap = len(mine & theirs) / len(union) if union else 0.0
                    if overlap < best:
                        best, best_j = overlap, j
                if best_j < 0:
                    no_donor += 1
                    continue
                out[i]["output"] = src[best_j]["output"]
                changes[i] = (k, {"output_from": best_j, "output_from_id": orig_ids[best_j],
                                  "word_overlap": round(best, 4)})
        elif k == "garbled":
            for i in pos:
                out[i]["output"] = _garble(src[i]["output"], krng)
                changes[i] = (k, {"words": len(src[i]["output"].split())})
        elif k == "duplicate":
            picks = krng.choice(donors, size=len(pos), replace=len(pos) > len(donors))
            for i, j in zip(pos, (int(x) for x in picks)):
                variant, inst = _near_duplicate(src[j]["instruction"], krng)
                out[i] = {"instruction": inst, "input": src[j]["input"], "output": src[j]["output"]}
                changes[i] = (k, {"copy_of": j, "copy_of_id": orig_ids[j], "variant": variant})
        elif k == "echo":
            for i in pos:
                out[i]["output"] = src[i]["instruction"]
                changes[i] = (k, {})
        elif k == "refusal":
            for i in pos:
                t = int(krng.integers(len(REFUSALS)))
                out[i]["output"] = REFUSALS[t]
                changes[i] = (k, {"template": t})
    dropped = {"unchanged": 0, "id_collision": 0, "not_eligible": n_target - len(used),
               "no_donor": no_donor}
    for i in list(changes):
        if out[i] == src[i]:
            out[i] = dict(src[i])
            del changes[i]
            dropped["unchanged"] += 1
    while True:  # a changed row may not take another row's content id (loading would skip it)
        ids = [content_id(r["instruction"], r["input"], r["output"]) for r in out]
        seen: dict[str, int] = {}
        for cid in ids:
            seen[cid] = seen.get(cid, 0) + 1
        clash = [i for i in changes if seen[ids[i]] > 1]
        if not clash:
            break
        for i in clash:
            out[i] = dict(src[i])
            del changes[i]
            dropped["id_collision"] += 1
    new_rows = [{"id": ids[i], **out[i]} for i in range(n)]
    changed = [{"position": i, "id": ids[i], "original_id": orig_ids[i], "kind": changes[i][0],
                "details": changes[i][1]} for i in sorted(changes)]
    counts = {k: sum(c["kind"] == k for c in changed) for k in names}
    record = {
        "format": RECORD_FORMAT, "version": RECORD_VERSION, "seed": int(seed),
        "fraction": float(fraction), "kinds": names, "n_rows": n, "n_corrupted": len(changed),
        "requested": requested, "counts": counts, "dropped": dropped,
        "kind_definitions": {k: KINDS[k].doc for k in names},
        "rows": changed, "clean_ids": [ids[i] for i in range(n) if i not in changes],
    }
    return new_rows, record


# --------------------------------------------------------------------------- files
def record_path_for(pool_path: str | os.PathLike) -> Path:
    """The record that sits next to a corrupted pool file: ``<stem>.corruption.json``."""
    p = Path(pool_path)
    return p.with_name(p.stem + RECORD_SUFFIX)


def write_corrupted(path: str | os.PathLike, rows: list[dict], record: dict) -> tuple[Path, Path]:
    """Write the pool (a JSON list, or JSONL for a ``.jsonl`` name) and its record; refuse
    (FileExistsError) when either file is there already. Returns both paths."""
    path = Path(path).expanduser()
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"{path}: the corrupted pool is written as .json or .jsonl; give a "
                         f"file name with one of those endings")
    side = record_path_for(path)
    for p in (path, side):
        if p.exists():
            raise FileExistsError(f"{p} exists; corrupted pools are never overwritten (give "
                                  f"another --out, or remove it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]}
             for r in rows]
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in plain)
    else:
        text = json.dumps(plain, ensure_ascii=False, indent=1) + "\n"
    record = {**record, "pool_file": path.name}
    with path.open("x", encoding="utf-8") as f:
        f.write(text)
    try:
        with side.open("x", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, indent=1) + "\n")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, side


def make_corrupted_file(pool: Pool, out: str | os.PathLike, fraction: float = 0.3, kinds=None,
                        seed: int = 0) -> tuple[Path, Path, dict]:
    """Corrupt a loaded pool and write it (with its record, which also says where the rows
    came from) to ``out``: what ``bench corrupt`` does."""
    rows, record = corrupt_pool(pool.rows, fraction, kinds, seed)
    record["source"] = {"pool": pool.name, "source": pool.source, "n": len(pool),
                        "sampled_from": pool.sampled_from, "fingerprint": pool.fingerprint(),
                        "skipped": dict(pool.skipped)}
    p, side = write_corrupted(out, rows, record)
    return p, side, record


# --------------------------------------------------------------------------- reading
class CorruptionRecord:
    """A corruption record read back: which content ids are clean, which corrupted (kind)."""

    def __init__(self, data: dict, where: str = "corruption record"):
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise PoolError(f"{where}: not a selbench corruption record (field 'format' "
                            f"must be {RECORD_FORMAT!r})")
        for key, tp in (("rows", list), ("clean_ids", list), ("kinds", list)):
            if not isinstance(data.get(key), tp):
                raise PoolError(f"{where}: field '{key}' must be a {tp.__name__}")
        self.data, self.where = data, where
        self.path: Path | None = None
        self.kind_by_id: dict[str, str] = {}
        for n, r in enumerate(data["rows"], 1):
            if not isinstance(r, dict) or not isinstance(r.get("id"), str) \
                    or r.get("kind") not in KINDS:
                raise PoolError(f"{where}: rows[{n}]: needs a string 'id' and a 'kind' among "
                                f"{', '.join(KIND_NAMES)}")
            self.kind_by_id[r["id"]] = r["kind"]
        self.clean_ids = set(data["clean_ids"])
        both = self.clean_ids & set(self.kind_by_id)
        if both:
            raise PoolError(f"{where}: id {sorted(both)[0]} is listed both clean and corrupted")

    @classmethod
    def read(cls, path: str | os.PathLike) -> "CorruptionRecord":
        path = Path(path).expanduser()
        if not path.is_file():
            raise PoolError(f"{path}: corruption record not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PoolError(f"{path}: not a readable JSON corruption record ({e})") from None
        rec = cls(data, str(path))
        rec.path = path
        return rec

    @property
    def kinds(self) -> list[str]:
        return list(self.data["kinds"])

    def kinds_of(self, pool: Pool) -> list[str]:
        """Per pool row its kind, or ``CLEAN``; a row the record does not know (not this
        record's pool) is an error naming it."""
        out = []
        for n, r in enumerate(pool.rows, 1):
            rid = r["id"]
            if rid in self.kind_by_id:
                out.append(self.kind_by_id[rid])
            elif rid in self.clean_ids:
                out.append(CLEAN)
            else:
                raise PoolError(f"{self.where}: pool {pool.source} row {n} (id {rid}) is in "
                                f"neither the clean nor the corrupted rows of this record: "
                                f"the record belongs to another pool")
        return out

    def summary(self) -> dict[str, Any]:
        d = self.data
        return {"n_rows": d.get("n_rows"), "n_corrupted": d.get("n_corrupted"),
                "fraction": d.get("fraction"), "seed": d.get("seed"), "counts": d.get("counts"),
                "dropped": d.get("dropped"), "source": d.get("source")}


def find_record(pool: Pool, explicit: str | os.PathLike | None = None,
                who: str = "the corruption track") -> CorruptionRecord:
    """The record given, else the one the pool carries (``data.corrupt``), else the one next
    to the pool's file; a clear error otherwise."""
    if explicit:
        return CorruptionRecord.read(explicit)
    if getattr(pool, "corruption", None):
        return CorruptionRecord(pool.corruption, f"the planted corruption of pool {pool.name}")
    side = record_path_for(pool.source) if pool.source else None
    if side is not None and side.is_file():
        return CorruptionRecord.read(side)
    raise PoolError(f"{who} needs a corruption record: the pool {pool.source} has no "
                    f"{side.name if side else '<stem>' + RECORD_SUFFIX} next to it (make the pool "
                    f"with `bench corrupt`, or give the record's path: selector_params.record)")


# --------------------------------------------------------------------------- the pool option
CORRUPT_KEYS = ("fraction", "kinds", "seed")


def apply_corruption(pool: Pool, spec: dict) -> Pool:
    """The pool with planted corruption from a run's ``data.corrupt`` ({fraction, kinds,
    seed}), deterministic from its seed (the same rows as ``bench corrupt`` would write);
    the record travels with the pool (``Pool.corruption``), so the oracle controls and the
    track read it without a file."""
    bad = set(spec) - set(CORRUPT_KEYS)
    if bad:
        raise PoolError(f"data.corrupt: unknown key(s) {sorted(bad)} (known: {', '.join(CORRUPT_KEYS)})")
    seed = int(spec.get("seed", 0))
    rows, record = corrupt_pool(pool.rows, float(spec.get("fraction", 0.3)), spec.get("kinds"), seed)
    note = (f"planted corruption: {record['n_corrupted']} of {len(rows)} rows "
            f"({', '.join(f'{k} {v}' for k, v in record['counts'].items())}), seed {seed}")
    out = Pool(pool.name, rows, pool.source, dict(pool.skipped),
               f"{pool.note}; {note}" if pool.note else note, pool.sampled_from)
    out.corruption = record
    return out

