"""`bench perf gsnr-record`: G-SNR's two recording points on the same ensemble: rank agreement and top-k overlap."""
from __future__ import annotations

from pathlib import Path

from ..hardware import pick_device
from ..selectors.gsnr import record_agreement
from ..selectors.proxy.config import ProfileConfig
from .common import BENCHMARKS, Benchmark, machine, pool_rows, write_result


def run(args) -> None:
    """G-SNR's two recording points on the same trained ensemble: norms taken during the
    updates (`record: train`, free) vs in a separate eval-mode pass at theta_e (`record:
    pass`, eqs. 1-2). Rank agreement of the utilities and overlap of the top fractions."""

    rows = pool_rows(args.n, args.data_dir)
    prof = ProfileConfig(proxy=args.proxy, members=args.members, epochs=2, batch_size=args.batch_size,
                         max_length=args.max_length, seed=0)
    res = record_agreement(rows, prof, pick_device(args.device))
    res["machine"] = machine()
    write_result(Path(args.out), "gsnr-record", res, {
        "proxy": args.proxy, "N": res["n"], "M x E": f"{res['members']} x {res['epochs']}",
        "max_len": res["max_length"], "spearman(utility)": f"{res['spearman_utility']:.3f}",
        "spearman(norms) mean": f"{res['spearman_norms_mean']:.3f}",
        "top 5% overlap": f"{res['top0.05_overlap']:.2f} (k={res['top0.05_k']})",
        "top 10% overlap": f"{res['top0.1_overlap']:.2f} (k={res['top0.1_k']})",
        "wall s": f"{res['wall_seconds']:.0f}"})


BENCHMARKS.add('gsnr-record', Benchmark(run, "G-SNR's two recording points on the same ensemble: rank agreement and top-k overlap.", {'n': 100, 'max_length': 128}))
