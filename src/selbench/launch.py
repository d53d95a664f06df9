"""Run a heavy stage as N processes under an existing launcher (torchrun or accelerate).

The driver (``bench run``) stays one process and owns the run folder: it writes a job spec
into the stage's temp folder, starts ``<launcher> -m selbench.worker <task> <spec>``, waits,
and only then marks the stage done (temp folder renamed). Workers only fill the temp folder
(training: rank 0 saves) or a shard folder (scoring: each rank writes its own shards). If a
worker fails, the driver raises with the log tail and nothing is marked done; the launched
process group is killed when the driver is interrupted.

Multi-node: the same job with rendezvous flags in ``launch.extra_args`` (torchrun:
``--nnodes 2 --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:PORT``; accelerate:
``--num_machines 2 --machine_rank R --main_process_ip HOST --main_process_port PORT``), the
runs folder on a shared file system, one driver per node (each waits for the same stage).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from .config import LaunchConfig


class LaunchError(RuntimeError):
    pass


def free_port() -> int:
    """A free TCP port on loopback (launcher rendezvous; test servers)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launcher_command(launch: LaunchConfig) -> list[str]:
    n = str(launch.num_processes)
    if launch.launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", n]
        if not any(a.startswith(("--rdzv", "--nnodes", "--master")) for a in launch.extra_args):
            cmd += ["--master-port", str(free_port())]
        return cmd + list(launch.extra_args)
    if launch.launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", n]
        if launch.config_file:
            cmd += ["--config_file", str(resolve_config_file(launch.config_file))]
        if not any("main_process_port" in a for a in launch.extra_args):
            cmd += ["--main_process_port", str(free_port())]
        if launch.num_processes > 1 and not launch.config_file:
            cmd += ["--multi_gpu"] if _has_cuda() else []
        return cmd + list(launch.extra_args)
    raise LaunchError(f"unknown launcher {launch.launcher!r}")


def resolve_config_file(path: str) -> Path:
    """An accelerate config path: as given, else relative to selbench's configs folder."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    from .config import configs_root

    q = configs_root() / path
    if q.exists():
        return q
    raise LaunchError(f"launch.config_file {path!r} not found (as given, or under {configs_root()})")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def uses_launcher(launch: LaunchConfig | None, stage: str) -> bool:
    return bool(launch and launch.launcher != "none" and stage in launch.stages)


def run_workers(task: str, spec: dict, launch: LaunchConfig, workdir: Path,
                log=print) -> None:
    """Run ``selbench.worker <task>`` under the launcher; raise LaunchError on failure."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"{task}-job.json"
    spec_path.write_text(json.dumps(spec, indent=2, default=str))
    cmd = launcher_command(launch) + ["-m", "selbench.worker", task, str(spec_path)]
    log_path = workdir / f"{task}-workers.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not _has_cuda():  # CPU processes: split the cores, no oversubscription
        per = max(1, (os.cpu_count() or 1) // launch.num_processes)
        env.setdefault("OMP_NUM_THREADS", str(per))
    log(f"[launch] {task}: {launch.launcher} x{launch.num_processes} (log: {log_path})")
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise LaunchError(f"{task} workers ({launch.launcher} x{launch.num_processes}) exited "
                          f"with code {rc}; log {log_path}:\n{tail}")


def rank_and_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment (1 process if unset)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))
