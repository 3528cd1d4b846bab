"""One GPU per job when a scheduler runs several jobs on one machine.

Snakemake caps the number of concurrent GPU jobs (``--resources gpu=N``) but does not say which
device a job should use. Each GPU job therefore claims a device itself: it takes an exclusive
``flock`` on ``<lock_dir>/gpu<id>.lock`` for the first free id and keeps it until the process
exits (the kernel drops the lock even if the process is killed, so no stale claim survives).

Inside a SLURM job that SLURM gave GPUs (``SLURM_JOB_ID`` and ``CUDA_VISIBLE_DEVICES`` set, as
for every GPU job of ``profiles/slurm``), the visible devices belong to that job alone, and the
same ids mean other devices in other jobs. A job that sees one device uses it without a lock;
one that sees several (the local executor running jobs inside one multi-GPU allocation) claims
one among the jobs of its own allocation, under ``<lock_dir>/slurm-<job id>/``. Jobs in
different allocations, on one node or on many, never wait for each other.

The candidate ids are ``COMM_GPU_IDS`` (comma-separated indices of visible devices) when set,
else every visible CUDA device. Tests set ``COMM_GPU_IDS`` to fake ids.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

GPU_IDS_ENV = "COMM_GPU_IDS"
SLURM_JOB_ENV = "SLURM_JOB_ID"

_held: list[IO] = []  # open lock files: the claims live as long as the process


def candidate_ids() -> list[int]:
    raw = os.environ.get(GPU_IDS_ENV, "").strip()
    if raw:
        try:
            return [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"{GPU_IDS_ENV}={raw!r}: expected comma-separated integers") from None
    import torch

    return list(range(torch.cuda.device_count()))


def slurm_gpu_job() -> str | None:
    """The id of the SLURM job this process runs in, when SLURM gave that job its GPUs."""
    job = os.environ.get(SLURM_JOB_ENV, "").strip()
    if job and os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return job
    return None


def claim_gpu(lock_dir: str | Path, poll_s: float = 1.0, timeout_s: float | None = None) -> int:
    """Lock the first free device id under ``lock_dir`` and return it; waits while all are
    taken (a job started outside the scheduler's GPU cap), up to ``timeout_s`` if given.
    In a SLURM GPU job, see the module docstring."""
    ids = candidate_ids()
    if not ids:
        raise RuntimeError("a GPU slot was requested but no CUDA device is visible")
    lock_dir = Path(lock_dir)
    slurm_job = slurm_gpu_job()
    if slurm_job is not None:
        if len(ids) == 1:
            return ids[0]  # SLURM pinned this job's device: nobody else sees it
        lock_dir = lock_dir / f"slurm-{slurm_job}"
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for gpu in ids:
            handle = open(lock_dir / f"gpu{gpu}.lock", "a+")  # noqa: SIM115 - held until exit
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _held.append(handle)
            return gpu
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {ids} in {lock_dir} after {timeout_s} s")
        time.sleep(poll_s)
