"""Entry point of launched workers: ``<launcher> -m selbench.worker TASK SPEC.json``.

Tasks: ``train`` (TRL fine-tuning, one process per device; rank 0 saves), ``ifd`` (each
rank scores its IFD shards), ``profile`` (each rank trains its ensemble members). The spec
is written by the driver (:func:`selbench.launch.run_workers`); workers never touch the
stage folders except the temp folder or shard folder the spec names.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _device(spec: dict) -> str:
    from .launch import rank_and_world

    dev = spec.get("device", "cpu")
    if dev.startswith("cuda"):
        import torch

        _, _, local = rank_and_world()
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return dev


def _rows(spec: dict) -> list[dict]:
    with open(spec["rows_file"], encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def task_train(spec: dict) -> None:
    from .benchmark.train import train_model
    from .config import TrainConfig, from_dict

    cfg = from_dict(TrainConfig, spec["train"], "job spec train")
    train_model(spec["model"], _rows(spec), cfg, Path(spec["out"]), spec.get("device", "cpu"),
                progress=False, processes=int(spec["processes"]),
                report_to=spec.get("report_to") or [])


def task_ifd(spec: dict) -> None:
    from .launch import rank_and_world
    from .selectors.ifd import score_ifd_shards

    rank, world, _ = rank_and_world()
    score_ifd_shards(_rows(spec), spec["proxy"], spec["max_length"], spec["batch_size"],
                     Path(spec["shard_dir"]), spec["shard_size"], _device(spec), rank, world)


def task_profile(spec: dict) -> None:
    from .config import from_dict
    from .gradients import ProfileConfig, build_members
    from .launch import rank_and_world

    rank, world, _ = rank_and_world()
    cfg = from_dict(ProfileConfig, spec["profile"], "job spec profile")
    build_members(_rows(spec), cfg, Path(spec["shard_dir"]), _device(spec), rank, world,
                  progress=False, keep_train_norms=bool(spec.get("keep_train_norms")))


TASKS = {"train": task_train, "ifd": task_ifd, "profile": task_profile}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in TASKS:
        print(f"usage: python -m selbench.worker {{{'|'.join(TASKS)}}} SPEC.json", file=sys.stderr)
        return 2
    TASKS[argv[0]](json.loads(Path(argv[1]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
