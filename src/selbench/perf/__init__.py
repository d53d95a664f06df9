"""`bench perf <name>`: speed and memory benchmarks, one module each (results in ``perf/``).

Each module registers its benchmark in :data:`~.common.BENCHMARKS` with its defaults; they
measure the project's public functions (the same code the pipeline runs)."""
from __future__ import annotations

import argparse

from . import (generate, grads, gsnr, gsnr_record, ifd, scale, selftest,  # noqa: F401  (register)
               spice, spice_logdet, startup)
from .common import BENCHMARKS


def main(what: str, rest: list[str]) -> int:
    bench = BENCHMARKS.get(what)
    if "own_parser" in bench.defaults:  # a benchmark with arguments of its own
        return bench.defaults["own_parser"](rest)
    d = bench.defaults
    p = argparse.ArgumentParser(prog=f"bench perf {what}", description=bench.help)
    p.add_argument("--out", default="perf", help="folder for <what>.json and <what>.md")
    p.add_argument("--data-dir", default=None)
    if "add_args" in d:  # a benchmark with arguments of its own
        d["add_args"](p)
        bench.run(p.parse_args(rest))
        return 0
    p.add_argument("--device", default="auto")
    p.add_argument("--proxy", default="smollm2-135m-instruct")
    p.add_argument("--members", type=int, default=3, help="gsnr-record: ensemble members")
    p.add_argument("--n", type=int, default=d.get("n", 64))
    p.add_argument("--batch-size", type=int, default=d.get("batch_size", 16))
    p.add_argument("--max-length", type=int, default=d.get("max_length", 1024))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--dim", type=int, default=8192)
    p.add_argument("--ratio", type=float, default=0.05)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--windows", type=int, default=2, help="spice: windows of the released loop")
    p.add_argument("--pool-size", type=int, default=128, help="spice: candidates per window")
    p.add_argument("--mode", default="top_k", help="spice: top_k | conflict_penalty")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generate")
    p.add_argument("--dtype", default="auto", help="generate: auto = bf16 where native, else float32")
    p.add_argument("--kv-cache-gb", type=float, default=None, help="generate: vLLM KV cache")
    p.add_argument("--threads", type=int, default=None, help="generate: hf torch threads")
    bench.run(p.parse_args(rest))
    return 0
