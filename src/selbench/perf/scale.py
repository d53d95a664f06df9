"""`bench perf scale`: IFD scoring and gradient-profile throughput with 1 and N processes
(the launcher path of the `score` stage), same examples, same settings; results in
perf/scale.{json,md}. On a GPU node each process gets its own device and throughput scales
with the devices; on a CPU box the processes share the cores (each gets cores / N threads),
so the gain is bounded by how well one process already used them."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ..config import LaunchConfig
from ..data import load_pool
from ..hardware import pick_device
from ..models import resolve_model
from ..selectors import ifd
from ..selectors.base import SelectionContext
from ..selectors.proxy.config import ProfileConfig
from ..selectors.proxy.profile import build_profile
from .common import BENCHMARKS, Benchmark, machine, write_result


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_scale(args) -> dict:
    dev = pick_device(args.device)
    rows = load_pool("alpaca", args.data_dir, size=args.n, seed=0).rows
    resolve_model(args.proxy)  # convert the embedded model once, outside the timings
    out: dict = {"n": args.n, "proxy": args.proxy, "device": dev, "processes": args.processes,
                 "ifd": {}, "profile": {}}
    icfg = ifd.IFDConfig(proxy=args.proxy, max_length=args.max_length, batch_size=args.batch_size)
    pcfg = ProfileConfig(proxy=args.proxy, members=args.members, epochs=1,
                         batch_size=args.batch_size, max_length=args.max_length,
                         projection_dim=0, record="train", seed=0)
    ifd.IFD_SHARD_SIZE = max(1, args.n // (2 * max(args.processes)))
    for n_proc in args.processes:
        launch = None if n_proc == 1 else LaunchConfig("torchrun", n_proc, stages=["score"])
        with tempfile.TemporaryDirectory() as d:
            ctx = SelectionContext(seed=0, device=dev, log=lambda m: None, progress=False,
                                   launch=launch, shard_root=Path(d), pool_key="perf")
            s = _timed(lambda: ifd.sharded_ifd_scores(rows, icfg, ctx))
        out["ifd"][n_proc] = {"seconds": s, "examples_per_second": args.n / s}
        with tempfile.TemporaryDirectory() as d:
            s = _timed(lambda: build_profile(rows, pcfg, dev, progress=False,
                                             shard_dir=Path(d) / "m", launch=launch,
                                             log=lambda m: None))
        out["profile"][n_proc] = {"seconds": s,
                                  "member_examples_per_second": args.n * args.members / s}
    base_i, base_p = out["ifd"][args.processes[0]], out["profile"][args.processes[0]]
    for n_proc in args.processes:
        out["ifd"][n_proc]["speedup"] = base_i["seconds"] / out["ifd"][n_proc]["seconds"]
        out["profile"][n_proc]["speedup"] = base_p["seconds"] / out["profile"][n_proc]["seconds"]
    return out


def main(rest: list[str]) -> int:  # its own arguments (processes list)
    p = argparse.ArgumentParser(prog="bench perf scale")
    p.add_argument("--out", default="perf")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--proxy", default="smollm2-135m-instruct")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--processes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    args = p.parse_args(rest)
    res = run_scale(args)
    res["machine"] = machine()
    row = {"n": args.n, "proxy": args.proxy}
    for k in args.processes:
        row[f"IFD ex/s x{k}"] = f"{res['ifd'][k]['examples_per_second']:.2f}"
        row[f"profile member-ex/s x{k}"] = f"{res['profile'][k]['member_examples_per_second']:.2f}"
    row["cpus"] = res["machine"].get("cpus")
    write_result(Path(args.out), "scale", res, row)
    return 0


BENCHMARKS.add("scale", Benchmark(lambda args: None, "IFD and profile throughput with 1 and N processes "
                                  "(the launcher path of the score stage)", {"own_parser": main}))
