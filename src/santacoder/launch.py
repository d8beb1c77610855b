"""What a training process needs to know about how it was launched (SLURM, torchrun, Lightning's own
subprocesses) before Hydra starts: a run id shared by all ranks, and whether this process is rank 0."""

from __future__ import annotations

import os
from datetime import datetime

from omegaconf import OmegaConf

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK")


def global_rank() -> int:
    """This process's rank from the launcher's environment (0 when not launched as a distributed job)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return 0


def run_id() -> str:
    """A name for the run directory that every rank of one job computes alike.

    SANTACODER_RUN_ID when set (scripts/torchrun.sh sets it), else the SLURM job id (with the array task),
    else torchrun's rendezvous id, else the current time (single-process runs).
    """
    if os.environ.get("SANTACODER_RUN_ID"):
        return os.environ["SANTACODER_RUN_ID"]
    if os.environ.get("SLURM_JOB_ID"):
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{os.environ['SLURM_JOB_ID']}" + (f"_{task}" if task else "")
    if os.environ.get("TORCHELASTIC_RUN_ID", "none") != "none":
        return f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def non_zero_rank_overrides() -> list[str]:
    """Hydra overrides that keep ranks other than 0 from writing the run's config copy and log file."""
    if global_rank() == 0:
        return []
    return [
        "hydra.output_subdir=null",
        "hydra.job_logging.root.handlers=[console]",
        "+hydra.job_logging.handlers.file.delay=true",
    ]
