"""Checks that run before any work: the model's shape against the data and an ``init_from`` checkpoint, the
attention and loss options and the trainer's accelerator against this machine, and Hydra multirun against
multi-process trainers. Each stops the run with one line naming the value and what to do."""

from __future__ import annotations

import logging
import math

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from santacoder.checkpoints.loading import read_checkpoint_config
from santacoder.conf.instantiate import command_line_overrides
from santacoder.config import SHAPE_FIELDS, GPTConfig
from santacoder.errors import ConfigError
from santacoder.model.attention import check_attn_impl
from santacoder.model.loss import check_loss_impl
from santacoder.training.strategies import SHARDED_REFUSAL

log = logging.getLogger(__name__)


def padded_vocab_size(tokenizer_size: int, multiple: int = 128) -> int:
    """Megatron pads the embedding to a multiple of 128 (SantaCoder: 49157 tokens -> 49280 rows)."""
    return multiple * math.ceil(tokenizer_size / multiple)


def adopt_checkpoint_shape(cfg: DictConfig) -> None:
    """With ``model.init_from``, the model's shape comes from the checkpoint: the config's shape fields are
    replaced, and one set explicitly on the command line to a different value is an error."""
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


def refuse_unsupported_checkpointing(cfg: DictConfig) -> None:
    """Settings under which checkpoints would not be exact or readable, refused before any work: FSDP's sharded
    (directory) checkpoints, and a validation interval that falls inside a gradient-accumulation window (Lightning
    counts ``val_check_interval`` in micro-batches; the checkpoints written at validation would count micro-batches
    as seen whose gradients they do not hold)."""
    trainer = cfg.get("trainer") or {}
    strategy = trainer.get("strategy")
    if isinstance(strategy, DictConfig) and strategy.get("state_dict_type", "full") == "sharded":
        raise ConfigError(SHARDED_REFUSAL)
    accumulate, interval = trainer.get("accumulate_grad_batches", 1), trainer.get("val_check_interval")
    if isinstance(interval, int) and isinstance(accumulate, int) and accumulate > 1 and interval % accumulate:
        multiple = accumulate * max(1, round(interval / accumulate))
        raise ConfigError(
            f"trainer.val_check_interval={interval} counts micro-batches, and with trainer.accumulate_grad_batches="
            f"{accumulate} validation (and the checkpoints written then) would fall inside an accumulation window; "
            f"use a multiple of {accumulate}, e.g. trainer.val_check_interval={multiple}"
        )
