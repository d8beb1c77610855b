"""Signals that end a training run early: finish the current batch, save ``last.ckpt``, exit as schedulers expect.

- SIGTERM (``kill``, a scheduler's preemption, SLURM's time limit): save, exit 143 (128 + 15), so the run is
  not mistaken for a finished one.
- SIGINT (Ctrl-C): save, exit 130. A second Ctrl-C stops at once, without saving.
- SIGUSR1 under SLURM (``#SBATCH --signal=SIGUSR1@120``): save, requeue the job (``scontrol requeue``), exit 0;
  the requeued job has the same id, so the same run directory, and resumes from ``last.ckpt`` there.

The stop itself is Lightning's SIGTERM mechanism, which every rank follows at the same batch boundary (rank
0's flag is broadcast each step in multi-process runs): the other two signals are turned into it. Saving is
``RunCheckpoint.on_exception``. Outside ``trainer.fit`` (data preparation) there is nothing to save and the
process exits at once with the same status.
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


def under_slurm() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def _handle(signum: int, frame) -> None:
    sig = signal.Signals(signum)
    stop_now = signal.getsignal(signal.SIGTERM) is _handle  # Lightning has not taken over SIGTERM: not in fit
    if sig == signal.SIGINT and _received:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    if not _received or sig != signal.SIGTERM:
        log.warning("received %s: saving last.ckpt after the current batch, then stopping", sig.name)
    _received.append(sig)
    if stop_now:
        raise SystemExit(EXIT_STATUS[sig] or 1)
    if sig != signal.SIGTERM:
        lightning_handler = signal.getsignal(signal.SIGTERM)
        if callable(lightning_handler):
            lightning_handler(signal.SIGTERM, frame)  # Lightning composes ours into its own: that adds SIGTERM


def install() -> None:
    """Handle SIGTERM, SIGINT and (under SLURM) SIGUSR1 from now on; call before ``trainer.fit``.

    Lightning keeps a SIGTERM handler it finds, composing it with its own; finding one for SIGUSR1 it does not
    install its SLURM handler, which would save mid-step into another file (``hpc_ckpt_*.ckpt``)."""
    _received.clear()
    signals = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGUSR1] if under_slurm() else [])
    for sig in signals:
        _previous[sig] = signal.signal(sig, _handle)


def uninstall() -> None:
    for sig, handler in _previous.items():
        signal.signal(sig, handler)
    _previous.clear()


def stop_signal() -> signal.Signals | None:
    """The first stopping signal received since ``install``, if any."""
    return _received[0] if _received else None


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
