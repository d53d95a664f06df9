"""`bench perf startup`: wall time of `bench ls` and `bench plan` in fresh processes (the
median of --repeats runs), and which heavy modules each imported (torch must not be)."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import BENCHMARKS, Benchmark, machine, write_result

PROBE = ("import sys, time, contextlib, io\n"
         "t = time.perf_counter()\n"
         "from selbench.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()):\n"
         "    main({argv})\n"
         "print(time.perf_counter() - t)\n"
         "print([m for m in ('torch', 'transformers', 'pandas', 'numpy', 'scipy') if m in sys.modules])\n")


def _once(argv: list[str]) -> tuple[float, float, list[str]]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    return time.perf_counter() - t, float(out[0]), json.loads(out[1].replace("'", '"'))


def run(args) -> None:
    res = {}
    for name, argv in (("ls", ["ls"]), ("plan", ["plan", "--runs-dir", "/tmp/selbench-perf-startup"])):
        runs = [_once(argv) for _ in range(args.repeats)]
        res[name] = {"process_seconds_median": statistics.median(r[0] for r in runs),
                     "in_process_seconds_median": statistics.median(r[1] for r in runs),
                     "heavy_modules": runs[0][2], "repeats": args.repeats}
    write_result(Path(args.out), "startup", {"what": "startup", **res, "machine": machine()}, {
        "bench ls s (process)": f"{res['ls']['process_seconds_median']:.2f}",
        "bench plan s (process)": f"{res['plan']['process_seconds_median']:.2f}",
        "imports (ls)": ", ".join(res["ls"]["heavy_modules"]) or "-",
        "torch loaded": "yes" if "torch" in res["ls"]["heavy_modules"] + res["plan"]["heavy_modules"] else "no"})


BENCHMARKS.add("startup", Benchmark(run, "wall time of bench ls / bench plan in fresh processes",
                                    {}))
