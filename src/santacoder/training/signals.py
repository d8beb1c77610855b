"""Signals that end a training run early: finish the current batch, save ``last.ckpt``, exit as schedulers expect.

- SIGTERM (``kill``, a scheduler's preemption, ``scancel``): save, exit 143 (128 + 15), so the run is not
  mistaken for a finished one.
- SIGINT (Ctrl-C): save, exit 130. A second Ctrl-C stops at once, without saving.
- SIGUSR1 under SLURM (``#SBATCH --signal=SIGUSR1@120``): save, requeue the job (``scontrol requeue``), exit 0;
  the requeued job has the same id, so the same run directory, and resumes from ``last.ckpt`` there.

A handler only records the signal. The ``StopOnSignal`` callback (``santacoder.training.callbacks``) reads the
record at the end of each training batch; in a multi-process run the ranks first agree (one all-reduce of a flag:
any rank's signal stops them all at the same batch), then every rank raises Lightning's ``SIGTERMException``, on
which ``RunCheckpoint`` saves. Lightning's own SIGTERM handler is replaced during training: it broadcasts from
inside the handler, which deadlocks when SLURM signals every rank at once (one rank in that broadcast, another in
the gradient all-reduce). Outside training (data preparation, setup, after the last step) there is nothing to
save: the process exits at once with the status, a SIGUSR1 under SLURM having requeued the job first. Data-loader
workers ignore SIGINT and SIGUSR1 and keep serving for a grace period after SIGTERM, then exit with status 0
(``santacoder.data.datamodule``): the main process decides and shuts them down, and a stuck worker still yields to
``kill``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

log = logging.getLogger(__name__)

EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130, signal.SIGUSR1: 0}
_received: list[signal.Signals] = []
_previous: dict[signal.Signals, object] = {}
_training = False  # between on_train_start and the end of fit: a signal waits for the batch boundary


def under_slurm() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def is_global_rank_zero() -> bool:
    """Whether this process is the job's global rank 0, from the launcher's environment (no process group needed)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def stop_signals() -> list[signal.Signals]:
    return [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR1] if under_slurm() else [])


def _handle(signum: int, frame) -> None:
    sig = signal.Signals(signum)
    if sig == signal.SIGINT and _received:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    if not _training:  # nothing to save: stop now (under SLURM, requeued first: the job is not finished)
        status = EXIT_STATUS[sig]
        if sig == signal.SIGUSR1 and is_global_rank_zero() and not requeue_slurm_job():
            status = 1
        raise SystemExit(status)
    if not _received:
        log.warning("received %s: saving last.ckpt after the current batch, then stopping", sig.name)
    _received.append(sig)


def install() -> None:
    """Handle SIGTERM, SIGINT and (under SLURM) SIGUSR1 from now on; call before ``trainer.fit``.

    Lightning finds our SIGUSR1 handler and so does not install its SLURM one (which saves mid-step into
    another file, ``hpc_ckpt_*.ckpt``); its SIGTERM handler is replaced by ``start_training``."""
    global _training
    _received.clear()
    _training = False
    for sig in stop_signals():
        _previous[sig] = signal.signal(sig, _handle)


def uninstall() -> None:
    global _training
    _training = False
    for sig, handler in _previous.items():
        signal.signal(sig, handler)
    _previous.clear()


def stop_signal() -> signal.Signals | None:
    """The first stopping signal received since ``install``, if any."""
    return _received[0] if _received else None


def start_training() -> None:
    """From now on a signal waits for the end of the current batch; SIGTERM is ours again (over Lightning's, which
    ``trainer.fit`` installs after ``install`` ran: see the module's docstring)."""
    global _training
    _training = True
    signal.signal(signal.SIGTERM, _handle)


def end_training() -> None:
    global _training
    _training = False


def requeue_slurm_job() -> bool:
    """Put this SLURM job back in the queue (from global rank 0); False when scontrol fails."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        log.error("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())
        return False
    log.warning("requeued SLURM job %s: it resumes from last.ckpt in the same run directory", job)
    return True
