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
from .data import _read_records, content_id, load_pool


def _pool_for(select_dir: Path):
    """The pool a select stage ran on, from its run's manifest (same config, same sample)."""
    root = select_dir.parent.parent
    man = json.loads((root / "manifest.json").read_text())["invocations"]
    cfg = from_dict(RunConfig, man[-1]["config"], str(root / "manifest.json"))
    d = cfg.data
    return load_pool(d.pool, d.data_dir, d.pool_size, d.sample_seed)


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
