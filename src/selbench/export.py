"""`bench export`: take a selection or a model's answers out of selbench.

- ``bench export subset RUN/select/<key>`` writes the selected rows as JSONL (or, with
  ``--format hf``, a Hugging Face ``datasets`` folder) in rank order, each row with its
  ``position`` in the source file (0-based, as in the published index files) and its
  score, ready to train on elsewhere.
- ``bench export answers RUN/generate/<key>`` writes the answers in alpaca_eval's format
  (``instruction``, ``output``, ``generator``, ``dataset``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import RunConfig, from_dict
from .corrupt import apply_corruption
from .data import DataNotFound, PoolError, _read_records, content_id, load_pool


class ExportError(ValueError):
    """A select stage whose pool cannot be rebuilt exactly (one line, names the folder)."""


def _load_recorded(data: dict, source: str | None):
    """The pool a select stage recorded (its data config), else from the recorded source
    file (e.g. a known pool's file found through a data dir that is not set now)."""
    tries = [data.get("pool")] + ([source] if source and not source.startswith("hf://") else [])
    err: Exception | None = None
    for what in dict.fromkeys(t for t in tries if t):
        try:
            pool = load_pool(what, data.get("data_dir"), data.get("pool_size"),
                             int(data.get("sample_seed") or 0), data.get("columns") or {})
            return apply_corruption(pool, data["corrupt"]) if data.get("corrupt") else pool
        except (DataNotFound, PoolError, OSError, ValueError) as e:
            err = e
    raise err or ExportError("no pool recorded")


def _pool_for(select_dir: Path):
    """The pool a select stage selected from, as it recorded it in its ``info.json``
    (``pool``: data config, source, fingerprint, n), checked against that fingerprint, so
    later runs of the experiment on other pools or samples do not matter. A select folder
    made before that record existed: the manifest's invocations whose pool has the
    folder's size and every selected id (newest first), else an error saying what to do."""
    sub = json.loads((select_dir / "subset.json").read_text())
    try:
        info = json.loads((select_dir / "info.json").read_text())
    except (OSError, ValueError):
        info = {}
    rec = info.get("pool") if isinstance(info, dict) else None
    if isinstance(rec, dict) and isinstance(rec.get("data"), dict):
        try:
            pool = _load_recorded(rec["data"], rec.get("source"))
        except (DataNotFound, PoolError, OSError, ValueError) as e:
            raise ExportError(f"{select_dir}: cannot load the pool it selected from "
                              f"({rec['data'].get('pool')!r}, source {rec.get('source')}): "
                              f"{e}") from None
        if rec.get("fingerprint") and pool.fingerprint() != rec["fingerprint"]:
            raise ExportError(f"{select_dir}: the pool it selected from ({rec.get('source')}) "
                              f"has changed since (now {len(pool)} rows, fingerprint "
                              f"{pool.fingerprint()}, recorded {rec.get('n')} rows, "
                              f"{rec['fingerprint']}): restore that file to export this subset")
        return pool
    want = set(sub.get("ids") or [])
    n = info.get("pool_size") if isinstance(info, dict) else None
    root = select_dir.parent.parent
    try:
        invocations = json.loads((root / "manifest.json").read_text())["invocations"]
    except (OSError, ValueError, KeyError, TypeError):
        invocations = []
    for inv in reversed(invocations if isinstance(invocations, list) else []):
        try:
            d = from_dict(RunConfig, inv["config"], str(root / "manifest.json")).data
            pool = load_pool(d.pool, d.data_dir, d.pool_size, d.sample_seed, d.columns)
        except Exception:  # noqa: BLE001 - an invocation on a pool not here: try the next
            continue
        ids = {r["id"] for r in pool.rows}
        if (n is None or len(pool) == n) and want <= ids:
            return pool
    raise ExportError(f"{select_dir}: made before select stages recorded their pool, and no "
                      f"run in {root / 'manifest.json'} used a pool with its {n} rows and "
                      f"selected ids; rerun that selection with its config (the stage is "
                      f"rebuilt with the record) and export again")


def source_positions(pool) -> dict[str, int]:
    """Content id -> 0-based position of the row in the pool's source file."""
    out: dict[str, int] = {}
    if pool.source.startswith("hf://"):
        return out
    for pos, (_, rec) in enumerate(_read_records(Path(pool.source))):
        if isinstance(rec, dict):
            cid = content_id(str(rec.get("instruction", "")), str(rec.get("input") or ""),
                             str(rec.get("output", "")))
            out.setdefault(cid, pos)
    return out


def export_subset(select_dir: str | Path, out: str | Path, fmt: str = "jsonl") -> Path:
    select_dir, out = Path(select_dir), Path(out)
    if not (select_dir / "subset.json").exists():
        raise FileNotFoundError(f"{select_dir}: not a finished select stage (no subset.json)")
    sub = json.loads((select_dir / "subset.json").read_text())
    scores = np.load(select_dir / "scores.npy")
    pool = _pool_for(select_dir)
    by_id = {r["id"]: (i, r) for i, r in enumerate(pool.rows)}
    missing = [cid for cid in sub["ids"] if cid not in by_id]
    if missing or len(scores) != len(pool):
        raise ExportError(f"{select_dir}: the rebuilt pool ({pool.source}, {len(pool)} rows) "
                          f"does not match this selection ({len(scores)} scores, "
                          f"{len(missing)} selected id(s) not in it)")
    pos = source_positions(pool)
    rows = []
    for rank, cid in enumerate(sub["ids"]):
        i, r = by_id[cid]
        rows.append({"rank": rank, "position": pos.get(cid), "id": cid, "score": float(scores[i]),
                     "instruction": r["instruction"], "input": r["input"], "output": r["output"]})
    if fmt == "hf":
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(out))
        return out
    if fmt != "jsonl":
        raise ValueError(f"--format {fmt!r}: jsonl or hf")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out


def export_answers(generate_dir: str | Path, out: str | Path, generator: str | None = None) -> Path:
    generate_dir, out = Path(generate_dir), Path(out)
    files = sorted(generate_dir.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{generate_dir}: no answer files (<eval set>.jsonl)")
    rows = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                a = json.loads(line)
                rows.append({"instruction": a["prompt"], "output": a["answer"],
                             "generator": generator or generate_dir.name, "dataset": f.stem,
                             "id": a["id"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return out
