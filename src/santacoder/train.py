"""The Hydra training task: validate the config, build data, model, loggers and trainer, fit, and write
``metrics.json`` and ``checkpoints/last.ckpt`` into the run's output directory."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from santacoder import interrupts
from santacoder.attention import check_attn_impl
from santacoder.callbacks import NonFiniteLossError
from santacoder.checkpoint import read_checkpoint, read_meta
from santacoder.checkpoint_io import refuse_unresumable, resolve_resume
from santacoder.errors import ConfigError, OutOfSpaceError, is_disk_full
from santacoder.loss import check_loss_impl
from santacoder.model import SHAPE_FIELDS, GPTConfig

log = logging.getLogger(__name__)


def build(cfg: DictConfig, node: str, **kwargs):
    """Instantiate ``cfg.<node>``; a ConfigError raised inside is re-raised as it is (not wrapped by Hydra)."""
    try:
        return instantiate(cfg[node], **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def padded_vocab_size(tokenizer_size: int, multiple: int = 128) -> int:
    """Megatron pads the embedding to a multiple of 128 (SantaCoder: 49157 tokens -> 49280 rows)."""
    return multiple * math.ceil(tokenizer_size / multiple)


def command_line_overrides() -> dict[str, str]:
    """``key=value`` overrides given on the command line of this Hydra run (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}


def adopt_checkpoint_shape(cfg: DictConfig) -> None:
    """With ``model.init_from``, the model's shape comes from the checkpoint: the config's shape fields are
    replaced, and one set explicitly on the command line to a different value is an error."""
    from santacoder.interop import read_checkpoint_config

    path = cfg.model.get("init_from")
    if not path:
        return
    if cfg.get("ckpt_path"):
        log.info("ckpt_path=%s resumes a run: model.init_from=%s is not used", cfg.ckpt_path, path)
        with open_dict(cfg):
            cfg.model.init_from = None
        return
    shape = read_checkpoint_config(path)
    explicit = command_line_overrides()
    with open_dict(cfg):
        for name in SHAPE_FIELDS:
            theirs = getattr(shape, name)
            key = f"model.config.{name}"
            if key in explicit and cfg.model.config[name] != theirs:
                raise ConfigError(
                    f"{key}={cfg.model.config[name]} conflicts with model.init_from={path!r}, whose {name} is "
                    f"{theirs}; drop the override (the shape comes from the checkpoint) or use another checkpoint"
                )
            cfg.model.config[name] = theirs
    log.info("model shape from %s: %s", path, {n: getattr(shape, n) for n in SHAPE_FIELDS})


def resolve_model_config(cfg: DictConfig, tokenizer_size: int) -> None:
    """Fill ``model.config.vocab_size`` from the tokenizer and check the model against the data, in place."""
    adopt_checkpoint_shape(cfg)
    mc = cfg.model.config
    with open_dict(cfg):
        if mc.vocab_size is None:
            mc.vocab_size = padded_vocab_size(tokenizer_size)
    if mc.vocab_size < tokenizer_size:
        raise ConfigError(
            f"model.config.vocab_size={mc.vocab_size} is smaller than the tokenizer's {tokenizer_size} tokens; "
            "set it to null (derive from the tokenizer) or at least the tokenizer's size"
        )
    if cfg.data.seq_len > mc.n_positions:
        raise ConfigError(
            f"data.seq_len={cfg.data.seq_len} is larger than model.config.n_positions={mc.n_positions}; "
            "shorten data.seq_len or raise model.config.n_positions"
        )
    try:  # field-level checks before anything heavy, named as the user wrote them
        GPTConfig(**OmegaConf.to_container(mc, resolve=True))
    except ConfigError as e:
        raise ConfigError(str(e).replace("GPTConfig.", "model.config.")) from None


def check_devices(cfg: DictConfig) -> None:
    """The attention backend, the loss and the trainer's accelerator against this machine: a GPU trainer or
    xformers without CUDA stops here with one line, not in Lightning or in the first forward pass after data work."""
    check_loss_impl(cfg.model.get("loss_impl", "auto"), cfg.model.get("loss_chunk_size", 1024))
    attn_impl = cfg.model.attn_impl
    try:
        check_attn_impl(attn_impl)
    except ConfigError as e:
        raise ConfigError(f"model.{e}") from None  # named as the user wrote it
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU (torch.cuda.is_available() is "
            "False); use trainer=cpu, or trainer=ddp_cpu for several processes"
        )
    if attn_impl == "xformers" and not on_gpu:
        raise ConfigError(
            "model.attn_impl=xformers needs a CUDA GPU (xformers kernels are CUDA-only); "
            "use model.attn_impl=auto or sdpa on this machine"
        )


def is_multi_process(trainer_cfg: DictConfig) -> bool:
    strategy = trainer_cfg.get("strategy", "auto")
    name = strategy if isinstance(strategy, str) else str(strategy.get("_target_", ""))
    devices = trainer_cfg.get("devices", 1)
    many_devices = not (devices in (1, "1") or (isinstance(devices, list | ListConfig) and len(devices) == 1))
    return many_devices or int(trainer_cfg.get("num_nodes", 1)) > 1 or any(s in name.lower() for s in ("ddp", "fsdp"))


def refuse_multirun_with_ddp(cfg: DictConfig) -> None:
    """Hydra's multirun launches jobs one after another in one process; DDP/FSDP re-launch the script per rank,
    which breaks that loop (the usual result is hung or duplicated jobs), so the combination is refused."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and is_multi_process(cfg.trainer):
        raise ConfigError(
            "Hydra multirun (-m) cannot be combined with a multi-process trainer (DDP/FSDP, devices > 1 or "
            "num_nodes > 1). Sweep by launching one run per setting instead, e.g. "
            "`for lr in 1e-4 2e-4; do python train.py trainer=ddp model.optimizer.lr=$lr; done` "
            "or a SLURM job array (scripts/slurm/train.sbatch)"
        )


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
    """Train as ``cfg`` says; returns the final metrics (also written to ``<output_dir>/metrics.json``)."""
    refuse_multirun_with_ddp(cfg)
    # which file to resume from, read and checksummed now: a damaged one stops the run before any other work
    ckpt = resolve_resume(cfg.get("ckpt_path"), cfg.paths.output_dir)
    datamodule = build(cfg, "data")  # validates data values and the corpus before any work
    datamodule.resume_with_other_data = bool(cfg.get("resume_with_other_data"))
    resolve_model_config(cfg, datamodule.tokenizer_size())
    if ckpt is not None:
        refuse_unresumable(ckpt, OmegaConf.to_container(cfg.model.config, resolve=True))
    check_devices(cfg)
    if cfg.extras.get("print_config"):
        _print_config(cfg)
    _keep_config_copy(cfg)
    L.seed_everything(cfg.seed, workers=True)

    resume_wandb_run(cfg, ckpt)
    model = build(cfg, "model")
    callbacks = [build(cfg.callbacks, name) for name in cfg.get("callbacks") or {}]
    callbacks.append(interrupts.StopOnSignal())  # not optional: a signal must never lose the run's progress
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
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    fit(trainer, model, datamodule, ckpt)
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


def fit(trainer: L.Trainer, model, datamodule, ckpt: Path | None) -> None:
    """``trainer.fit``, stopping cleanly on SIGTERM, SIGINT or SLURM's SIGUSR1 (see ``santacoder.interrupts``)."""
    # The data module puts its loader at the checkpoint's sample itself (CodeDataModule.state_dict); a loader
    # Lightning could resume (a stateful one) loses its state when configure_optimizers reads
    # estimated_stepping_batches (Lightning #20550), so Lightning's warning that ours is not resumable is wrong.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    interrupts.install()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt)
    except SIGTERMException:
        stop = interrupts.stop_signal()
        status = interrupts.EXIT_STATUS.get(stop, 143)
        if stop == signal.SIGUSR1 and trainer.is_global_zero and not interrupts.requeue_slurm_job():
            status = 1
        log.warning(
            "stopped by %s at step %d; exit status %d", stop.name if stop else "SIGTERM", trainer.global_step, status
        )
        raise SystemExit(status) from None
    finally:
        interrupts.uninstall()


def _finish_wandb(trainer: L.Trainer) -> None:
    """Close W&B runs so offline runs are complete on disk (Lightning leaves them open for notebooks)."""
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
        log.error("invalid configuration: %s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except NonFiniteLossError as e:
        log.error("training stopped: %s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        if not is_disk_full(e):
            raise
        message = e.strerror if isinstance(e, OutOfSpaceError) else f"{e.strerror}: {e.filename or e}"
        log.error("training stopped: %s", message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
