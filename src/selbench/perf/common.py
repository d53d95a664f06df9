"""Shared parts of the benchmarks: where results go, what the machine is, the pool rows.

A benchmark is a function of parsed arguments registered in :data:`BENCHMARKS` with its
defaults; ``bench perf <name>`` runs it and writes ``<out>/<name>.json`` (the result and the
machine) and appends a markdown row to ``<out>/<name>.md``. Benchmarks, not tests: numbers
depend on the machine, which is recorded with them."""
from __future__ import annotations

import json
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..data import load_pool
from ..registry import Registry
from ..runs import device_info


@dataclass
class Benchmark:
    run: Callable[[Any], Any]
    help: str
    defaults: dict[str, Any] = field(default_factory=dict)


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict:
    return device_info()


def write_result(out: Path, what: str, result: dict, md_row: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{what}.json").write_text(json.dumps(result, indent=2, default=str))
    md = out / f"{what}.md"
    header = "| " + " | ".join(md_row) + " |\n|" + "---|" * len(md_row) + "\n"
    if not md.exists():
        md.write_text(header)
    with md.open("a") as f:
        f.write("| " + " | ".join(str(v) for v in md_row.values()) + " |\n")
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {out / (what + '.json')} and {md}")


def pool_rows(n: int, data_dir: str | None, seed: int = 0):
    return load_pool("alpaca", data_dir, size=n, seed=seed).rows
