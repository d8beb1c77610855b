"""The Hydra training task: validate the config, build data, model, loggers and trainer, fit, and write
``metrics.json`` and ``checkpoints/last.ckpt`` into the run's output directory."""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from santacoder.checkpoints.discovery import refuse_unresumable, resolve_resume
from santacoder.checkpoints.format import read_meta
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.conf.instantiate import build
from santacoder.errors import ConfigError, OutOfSpaceError, is_disk_full, stop
from santacoder.training import signals
from santacoder.training.callbacks import NonFiniteLossError, StopOnSignal
from santacoder.training.preflight import (
    check_devices,
    refuse_multirun_with_ddp,
    refuse_unsupported_checkpointing,
    resolve_model_config,
)
from santacoder.training.resume import AgreedCheckpoint, AgreeOnResume

log = logging.getLogger(__name__)


def resume_wandb_run(cfg: DictConfig, ckpt: Path | None) -> None:
    """When resuming from a checkpoint, continue the W&B run that wrote it (its id is saved in the checkpoint)."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if ckpt is None or wandb_cfg is None or wandb_cfg.get("id"):
        return
    run_id = read_meta(read_checkpoint(ckpt), f"checkpoint {str(ckpt)!r}").wandb_run_id
    if run_id:
        with open_dict(cfg):
            wandb_cfg.id = run_id
            wandb_cfg.resume = "allow"
        log.info("resuming W&B run %s from %s", run_id, ckpt)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as ``cfg`` says; returns the final metrics (also written to ``<output_dir>/metrics.json``).

    Stopping signals are handled from the first line to the last (``santacoder.training.signals``): inside the
    training loop they save and stop at a step boundary; before and after it they stop at once, and SLURM's
    SIGUSR1 requeues the job first, whenever it comes."""
    signals.install()
    try:
        return _train(cfg)
    finally:
        signals.uninstall()


def _train(cfg: DictConfig) -> dict[str, float]:
    refuse_multirun_with_ddp(cfg)
    refuse_unsupported_checkpointing(cfg)
    # a quick look at the checkpoint to resume from (its metadata, as this process's listing shows it); the file
    # is chosen and verified once per job, by rank 0 inside fit (santacoder.training.resume)
    ckpt = resolve_resume(cfg.get("ckpt_path"), cfg.paths.output_dir, verify=False)
    datamodule = build(cfg, "data")  # validates data values and the corpus before any work
    datamodule.resume_with_other_data = bool(cfg.get("resume_with_other_data"))
    resolve_model_config(cfg, datamodule.tokenizer_size())
    model_config = OmegaConf.to_container(cfg.model.config, resolve=True)
    if ckpt is not None:
        refuse_unresumable(ckpt, model_config)
    check_devices(cfg)
    if cfg.extras.get("print_config"):
        _print_config(cfg)
    _keep_config_copy(cfg)
    L.seed_everything(cfg.seed, workers=True)

    resume_wandb_run(cfg, ckpt)
    model = build(cfg, "model")
    callbacks = [build(cfg.callbacks, name) for name in cfg.get("callbacks") or {}]
    callbacks.append(StopOnSignal())  # not optional: a signal must never lose the run's progress
    resume = AgreedCheckpoint(str(cfg.ckpt_path)) if cfg.get("ckpt_path") else None
    if resume is not None:
        callbacks.append(AgreeOnResume(resume, cfg.paths.output_dir, model_config))
    loggers = [build(cfg.logger, name) for name in cfg.get("logger") or {}]
    trainer: L.Trainer = build(cfg, "trainer", callbacks=callbacks, logger=loggers or False)
    micro = datamodule.micro_batch_size(trainer.world_size, trainer.accumulate_grad_batches)
    log.info(
        "global batch %d sequences x %d tokens = micro batch %d x %d devices x %d nodes x %d accumulation",
        cfg.data.batch_size,
        cfg.data.seq_len,
        micro,
        trainer.num_devices,
        trainer.num_nodes,
        trainer.accumulate_grad_batches,
    )
    log.info("model: %s parameters", f"{model.model.num_params():,}")
    _log_config(trainer, cfg)
    fit(trainer, model, datamodule, resume)
    _finish_wandb(trainer)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    metrics.update(
        step=trainer.global_step,
        tokens_seen=trainer.global_step * cfg.data.batch_size * cfg.data.seq_len,
        num_params=model.model.num_params(),
        uniform_loss=math.log(len(datamodule.tokenizer)),
    )
    _write_metrics(Path(cfg.paths.output_dir), metrics)
    return metrics


def fit(trainer: L.Trainer, model, datamodule, ckpt: AgreedCheckpoint | Path | None) -> None:
    """``trainer.fit``, stopping cleanly on SIGTERM, SIGINT or SLURM's SIGUSR1 (see ``santacoder.training.signals``)."""
    # The data module puts its loader at the checkpoint's sample itself (CodeDataModule.state_dict); a loader
    # Lightning could resume (a stateful one) loses its state when configure_optimizers reads
    # estimated_stepping_batches (Lightning #20550), so Lightning's warning that ours is not resumable is wrong.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt)
    except SIGTERMException:
        stop = signals.stop_signal()
        status = signals.EXIT_STATUS.get(stop, 143)
        if stop == signal.SIGUSR1 and trainer.is_global_zero and not signals.requeue_slurm_job():
            status = 1
        log.warning(
            "stopped by %s at step %d; exit status %d", stop.name if stop else "SIGTERM", trainer.global_step, status
        )
        raise SystemExit(status) from None


def _log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Every logger's first call, before training: W&B starts its run here, so a missing login is reported now,
    in one line, not as a traceback from inside wandb (on a terminal wandb asks for the key itself)."""
    for lg in trainer.loggers:
        try:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        except Exception as e:
            if type(e).__name__ != "UsageError" or not type(e).__module__.startswith("wandb"):
                raise
            raise ConfigError(
                f"logger=wandb could not start a W&B run ({e}); or log offline with WANDB_MODE=offline "
                "(upload later with `wandb sync <run dir>/wandb/offline-run-*`)"
            ) from None


def _finish_wandb(trainer: L.Trainer) -> None:
    """Close W&B runs so offline runs end with their exit record (Lightning leaves them open for notebooks). W&B's
    service may still be flushing the log for a moment after this returns; `wandb sync` after the process exits,
    or the tests' reader, which waits for that record, sees it whole."""
    for lg in trainer.loggers:
        if type(lg).__name__ == "WandbLogger" and trainer.is_global_zero:
            lg.experiment.finish()


@rank_zero_only
def _write_metrics(output_dir: Path, metrics: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    log.info("final metrics: %s", json.dumps(metrics, sort_keys=True))
    log.info("run directory: %s", output_dir)


@rank_zero_only
def _keep_config_copy(cfg: DictConfig) -> None:
    """``.hydra/config.yaml`` in the run directory for a run started from Python (``santacoder.compose``), where
    no Hydra run wrote one: eval.py and resuming read a run's data settings from it."""
    copy = Path(cfg.paths.output_dir) / ".hydra" / "config.yaml"
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, copy, resolve=True)


@rank_zero_only
def _print_config(cfg: DictConfig) -> None:
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))


def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra entry point: a ConfigError ends the run with its message and exit status 1, no traceback."""
    try:
        return train(cfg)
    except ConfigError as e:
        _remove_untouched_run_dir(cfg)
        stop(str(e), log, "invalid configuration")
    except NonFiniteLossError as e:
        stop(str(e), log, "training stopped")
    except OSError as e:
        if not is_disk_full(e):
            raise
        message = e.strerror if isinstance(e, OutOfSpaceError) else f"{e.strerror}: {e.filename or e}"
        stop(message, log, "training stopped")


@rank_zero_only
def _remove_untouched_run_dir(cfg: DictConfig) -> None:
    """A new run refused before any work leaves no directory behind: it holds only Hydra's config copy and the
    log. A run directory being resumed, or holding anything else, is never touched."""
    run = Path(cfg.paths.output_dir)
    if cfg.get("ckpt_path") or not run.is_dir():
        return
    if {p.name for p in run.iterdir()} <= {".hydra", f"{cfg.task_name}.log"}:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            if Path(handler.baseFilename).parent == run:  # Hydra's log file: closed, or it would be made again
                handler.close()
                root.removeHandler(handler)
        shutil.rmtree(run, ignore_errors=True)
