"""What a training process needs to know about how it was launched (SLURM, torchrun, Lightning's own
subprocesses) before Hydra starts: a run id shared by all ranks, and whether this process is global rank 0."""

from __future__ import annotations

import functools
import os
import secrets
from datetime import datetime
from pathlib import Path

# Each launcher tells a process its place in the job through some of these: torchrun sets RANK (and
# LOCAL_RANK), SLURM's srun sets SLURM_PROCID, Lightning's own launcher sets LOCAL_RANK and NODE_RANK for the
# processes it starts.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def is_global_rank_zero() -> bool:
    """Whether this process is rank 0 of its job: no launcher variable says otherwise. True outside
    distributed jobs. (Global rank 0 is rank 0 on node 0, so a non-zero LOCAL_RANK or NODE_RANK rules it out.)"""
    return all(os.environ.get(name) in (None, "", "0") for name in RANK_VARIABLES)


@functools.cache  # one name per process, however often Hydra resolves it
def run_id() -> str:
    """A name for the run directory that every rank of one job computes alike, and no other job does.

    SANTACODER_RUN_ID when set (scripts/torchrun.sh sets it), else the SLURM job id (with the array task),
    else torchrun's rendezvous id, else the start time and a random suffix (single-process runs: two started
    in the same second get two directories; Lightning passes its own subprocesses the directory itself).
    """
    if os.environ.get("SANTACODER_RUN_ID"):
        return os.environ["SANTACODER_RUN_ID"]
    if os.environ.get("SLURM_JOB_ID"):
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{os.environ['SLURM_JOB_ID']}" + (f"_{task}" if task else "")
    if os.environ.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S_") + secrets.token_hex(3)


def run_dir(runs_root: str, ckpt_path: str | None) -> str:
    """The run directory: resuming from a checkpoint of a run directory continues in that directory (its
    ``checkpoints/`` file, or the run directory itself); otherwise ``runs_root/<run_id>``. ``ckpt_path=last``
    resumes in this job's own directory, which is the run id's."""
    if ckpt_path and ckpt_path != "last":
        path = Path(ckpt_path).resolve()
        if path.is_file() and path.parent.name == "checkpoints":
            return str(path.parent.parent)
        if path.is_dir() and (path / "checkpoints").is_dir():
            return str(path)
        if path.is_dir() and path.name == "checkpoints":
            return str(path.parent)
    return f"{runs_root}/{run_id()}"
