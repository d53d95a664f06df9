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

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import LaunchConfig, configs_root
from .hardware import cuda_available


class LaunchError(RuntimeError):
    pass


def write_job_rows(path: Path, rows: list[dict]) -> Path:
    """The rows a launched job works on, one JSON object per line (read back by
    :func:`read_job_rows` in every worker)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    return path


def read_job_rows(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
            cmd += ["--multi_gpu"] if cuda_available() else []
        return cmd + list(launch.extra_args)
    raise LaunchError(f"unknown launcher {launch.launcher!r}")


def resolve_config_file(path: str) -> Path:
    """An accelerate config path: as given, else relative to selbench's configs folder."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    q = configs_root() / path
    if q.exists():
        return q
    raise LaunchError(f"launch.config_file {path!r} not found (as given, or under {configs_root()})")


def uses_launcher(launch: LaunchConfig | None, stage: str) -> bool:
    return bool(launch and launch.launcher != "none" and stage in launch.stages)


class Terminated(BaseException):
    """The driver got SIGTERM while waiting for its workers (they are stopped first)."""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first); None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/<pid>/stat), to tell a live
    driver from a new process that reuses its pid; None where /proc is not available."""
    st = _proc_stat(pid)
    return st[19] if st and len(st) > 19 else None


def driver_alive(pid: int, start: str | None) -> bool:
    """Whether the driver ``pid`` (started at ``start``) still runs: not gone, not a zombie
    (killed, not yet reaped by its parent) and not another process that reuses its pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    st = _proc_stat(pid)
    if st is None:
        return True  # no /proc: the signal test is all there is
    if st[0] in ("Z", "X"):
        return False
    return start is None or (st[19] if len(st) > 19 else None) in (None, start)


def watch_driver(spec: dict, interval: float = 0.5) -> threading.Thread | None:
    """In a worker: exit at once (``os._exit``) when the driver that launched it is gone, so
    that no worker outlives its driver, even one killed by SIGKILL (which no handler sees).
    Also records this worker's pid in the job folder."""
    pid, start = spec.get("driver_pid"), spec.get("driver_start")
    if spec.get("pid_dir"):
        with contextlib.suppress(OSError):
            d = Path(spec["pid_dir"])
            d.mkdir(parents=True, exist_ok=True)
            (d / f"rank-{os.environ.get('RANK', '0')}.pid").write_text(str(os.getpid()))
    if not pid:
        return None

    def loop():
        while True:
            if not driver_alive(int(pid), start):
                os._exit(70)  # the driver is gone: nobody will publish what this computes
            time.sleep(interval)

    t = threading.Thread(target=loop, name="selbench-driver-watch", daemon=True)
    t.start()
    return t


def _death_signal_setter():
    """The launcher's ``preexec_fn``: SIGTERM when the driver dies (Linux prctl
    PR_SET_PDEATHSIG), so torchrun/accelerate stop their workers even after a SIGKILL of the
    driver. libc is looked up here, in the driver, so the child only makes the call (no
    import between fork and exec); if the driver died before the call, the child exits at
    once. None where prctl is not available (then the workers' own watch still holds)."""
    try:
        import ctypes  # lazy: heavy

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the driver is already gone
            os._exit(70)

    return preexec


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the launcher's process group (the launcher forwards it to its workers),
    then SIGKILL to whatever is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _terminate_raises():
    """While the driver waits: SIGTERM raises :class:`Terminated` (SIGINT already raises
    KeyboardInterrupt), so the workers are stopped before the driver exits."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one must not cut the stop short
        raise Terminated(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_workers(task: str, spec: dict, launch: LaunchConfig, workdir: Path,
                log=print) -> None:
    """Run ``selbench.worker <task>`` under the launcher; raise LaunchError on failure.

    No worker outlives the driver: on SIGINT/SIGTERM the driver stops the launcher's process
    group (SIGTERM, then SIGKILL) before it exits; if the driver is killed outright, the
    launcher gets SIGTERM from the kernel (parent-death signal) and every worker exits by
    itself within a second (it watches the driver's pid, :func:`watch_driver`). Workers only
    ever write into the temp or shard folder the spec names; the driver alone publishes."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "driver_pid": os.getpid(), "driver_start": _process_start(os.getpid()),
            "pid_dir": str(workdir / "pids")}
    spec_path = workdir / f"{task}-job.json"
    spec_path.write_text(json.dumps(spec, indent=2, default=str))
    cmd = launcher_command(launch) + ["-m", "selbench.worker", task, str(spec_path)]
    log_path = workdir / f"{task}-workers.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not cuda_available():  # CPU processes: split the cores, no oversubscription
        per = max(1, (os.cpu_count() or 1) // launch.num_processes)
        env.setdefault("OMP_NUM_THREADS", str(per))
    log(f"[launch] {task}: {launch.launcher} x{launch.num_processes} (log: {log_path})")
    with log_path.open("w") as out, _terminate_raises():
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=_death_signal_setter())
        try:
            rc = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise LaunchError(f"{task} workers ({launch.launcher} x{launch.num_processes}) exited "
                          f"with code {rc}; log {log_path}:\n{tail}")


def rank_and_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment (1 process if unset)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))
