"""Entry point of launched workers: ``<launcher> -m selbench.worker TASK SPEC.json``.

Tasks: ``train`` (TRL fine-tuning, one process per device; rank 0 saves), ``ifd`` (each
rank scores its IFD shards), ``profile`` (each rank trains its ensemble members). The spec
is written by the driver (:func:`selbench.launch.run_workers`); workers never touch the
stage folders except the temp folder or shard folder the spec names.

Every task takes its device from one rule, :func:`selbench.hardware.rank_device`: on CUDA,
local rank r runs on ``cuda:r``. Every worker also watches its driver
(:func:`selbench.launch.watch_driver`): when the driver dies (even by SIGKILL) the worker
exits instead of finishing into a folder nobody will publish.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .benchmark.train import train_model
from .config import TrainConfig, from_dict
from .hardware import rank_device, resolve_precision
from .launch import rank_and_world, read_job_rows, watch_driver
from .selectors.ifd import score_ifd_shards
from .selectors.proxy.config import ProfileConfig
from .selectors.proxy.profile import build_members


def task_train(spec: dict, device: str) -> None:
    cfg = from_dict(TrainConfig, spec["train"], "job spec train")
    precision = spec.get("precision") or resolve_precision(cfg.precision, device)
    train_model(spec["model"], read_job_rows(spec["rows_file"]), cfg, Path(spec["out"]), device,
                progress=False, processes=int(spec["processes"]),
                report_to=spec.get("report_to") or [], precision=precision)


def task_ifd(spec: dict, device: str) -> None:
    rank, world, _ = rank_and_world()
    score_ifd_shards(read_job_rows(spec["rows_file"]), spec["proxy"], spec["max_length"],
                     spec["batch_size"], Path(spec["shard_dir"]), spec["shard_size"], device,
                     rank, world)


def task_profile(spec: dict, device: str) -> None:
    rank, world, _ = rank_and_world()
    cfg = from_dict(ProfileConfig, spec["profile"], "job spec profile")
    build_members(read_job_rows(spec["rows_file"]), cfg, Path(spec["shard_dir"]), device, rank,
                  world, progress=False, keep_train_norms=bool(spec.get("keep_train_norms")))


TASKS = {"train": task_train, "ifd": task_ifd, "profile": task_profile}


def main(argv: list[str] | None = None, cuda=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m selbench.worker {{{'|'.join(TASKS)}}} SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    watch_driver(spec)
    device = rank_device(spec.get("device", "cpu"), cuda)
    TASKS[argv[0]](spec, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
