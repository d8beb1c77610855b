"""The LightningModule: next-token cross-entropy, AdamW with weight-decay groups, warmup + cosine.

All constructor arguments are plain values (dicts, numbers, strings). What the model is and how it was
trained (``config``, ``optimizer``, ``scheduler``, ``decay_embeddings``) is saved as hyper-parameters, so a
checkpoint rebuilds its module with ``SantaCoderLitModule.load_from_checkpoint(path)``; how it runs
(``attn_impl``, ``loss_impl``, ``loss_chunk_size``, ``activation_checkpointing``, ``compile``) is not saved
and is chosen anew where it runs.
``optimizer`` and ``scheduler`` are Hydra nodes (``_target_`` + ``_partial_: true``) instantiated here when
training starts; their defaults live in ``configs/model/module/default.yaml`` only.
"""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from santacoder.checkpoints.format import attach_tokenizer, read_meta, stamp
from santacoder.checkpoints.loading import load
from santacoder.config import GPTConfig
from santacoder.data.prepared_datamodule import adopt_data_state
from santacoder.errors import ConfigError
from santacoder.model.gpt import GPT
from santacoder.model.loss import IGNORE_INDEX
from santacoder.training.flops import analytic_flops_per_token, measured_flops_per_batch
from santacoder.training.language_loss import LanguageLoss

RNG_KEY = "rng_states"  # the ranks' torch generator states, for dropout (see SantaCoderLitModule)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_fraction: float, min_lr_ratio: float
) -> LambdaLR:
    """Linear warmup over ``warmup_fraction * total_steps``, then cosine decay to ``min_lr_ratio * lr``."""
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0
    return LambdaLR(optimizer, partial(_warmup_cosine, warmup=warmup, total=total_steps, min_ratio=min_lr_ratio))


def _warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: torch.nn.Module, weight_decay: float, decay_embeddings: bool) -> list[dict]:
    """AdamW groups: biases and LayerNorm parameters never decay; linear weights always do; embeddings (token
    and position tables, and with them the tied LM head) decay when ``decay_embeddings``.

    ``decay_embeddings=True`` is Megatron-LM's rule, so SantaCoder's: only biases and norms are exempt.
    ``False`` also exempts the embeddings, as nanoGPT and minGPT do.
    """
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue  # the tied LM head is the token embedding: count it once
            seen.add(id(param))
            if isinstance(module, torch.nn.Linear) and name == "weight":
                decays = True
            elif isinstance(module, torch.nn.Embedding):
                decays = decay_embeddings
            else:  # biases and LayerNorm weights
                decays = False
            (decay if decays else no_decay).append(param)
    # names show up in LearningRateMonitor's metric names (lr-AdamW/decay)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def check_training_config(optimizer: dict | None, scheduler: dict | None) -> None:
    """The optimizer and schedule values, checked when the module is built (before any data work): a bad one
    is one line naming it, not torch's traceback when training starts."""

    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    if optimizer is not None:
        lr, weight_decay = optimizer.get("lr"), optimizer.get("weight_decay", 0.0)
        check(
            isinstance(lr, int | float) and math.isfinite(lr) and lr >= 0,  # 0: the weights stay (a test, a probe)
            f"model.optimizer.lr={lr} must be a number >= 0 (SantaCoder: 2e-4)",
        )
        check(
            isinstance(weight_decay, int | float) and weight_decay >= 0,
            f"model.optimizer.weight_decay={weight_decay} must be >= 0 (SantaCoder: 0.1)",
        )
        # the optimizer's own checks (betas, eps, ...), on one dummy parameter
        opt_cfg = {k: v for k, v in optimizer.items() if k != "weight_decay"}
        try:
            instantiate(opt_cfg)([torch.nn.Parameter(torch.zeros(1))])
        except Exception as e:  # noqa: BLE001 (torch raises ValueError, Hydra its own types)
            cause = e.__cause__ or e
            raise ConfigError(f"model.optimizer ({opt_cfg.get('_target_')}) is invalid: {cause}") from None
    if scheduler is not None:
        warmup, min_ratio = scheduler.get("warmup_fraction", 0.0), scheduler.get("min_lr_ratio", 0.0)
        check(
            isinstance(warmup, int | float) and 0 <= warmup < 1,
            f"model.scheduler.warmup_fraction={warmup} must be in [0, 1) (a fraction of trainer.max_steps)",
        )
        check(
            isinstance(min_ratio, int | float) and 0 <= min_ratio <= 1,
            f"model.scheduler.min_lr_ratio={min_ratio} must be in [0, 1] (a fraction of the peak lr)",
        )


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value


class SantaCoderLitModule(L.LightningModule):
    """``attn_impl`` picks the attention backend (see santacoder.model.attention), ``loss_impl`` and
    ``loss_chunk_size`` how the loss is computed (see santacoder.model.loss); ``activation_checkpointing``
    recomputes each block's activations in the backward pass (less memory, ~30% more compute); ``compile``
    compiles each block with ``torch.compile`` in place, so parameter names and checkpoints stay unchanged (no
    ``_orig_mod.`` prefixes); ``init_from`` starts from the weights of any checkpoint that ``santacoder.load``
    reads (this project's, Hugging Face, original santacoder, Megatron-LM); ``decay_embeddings`` see
    ``parameter_groups``. Without ``optimizer`` (a module rebuilt from a converted checkpoint) it can be used
    but not trained."""

    def __init__(
        self,
        config: dict,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        # Python defaults only for what a checkpoint may lack when load_from_checkpoint rebuilds the module: the
        # runtime choices (never saved) and decay_embeddings (False: what files from before the option trained
        # with). Training sets them all from configs/model/module/default.yaml.
        decay_embeddings: bool = False,
        attn_impl: str = "auto",
        loss_impl: str = "auto",
        loss_chunk_size: int = 1024,
        activation_checkpointing: bool = False,
        compile: bool = False,
        init_from: str | None = None,
    ):
        super().__init__()
        # Plain containers only, so checkpoints load with weights_only=True (no OmegaConf objects inside).
        config, optimizer, scheduler = (_plain(x) for x in (config, optimizer, scheduler))
        self.config = GPTConfig.from_dict(config, source="model.config")
        self.save_hyperparameters(
            {
                "config": self.config.to_dict(),
                "optimizer": optimizer,
                "scheduler": scheduler,
                "decay_embeddings": bool(decay_embeddings),
            }
        )
        check_training_config(optimizer, scheduler)
        self.model = GPT(self.config, attn_impl=attn_impl, loss_impl=loss_impl, loss_chunk_size=loss_chunk_size)
        if init_from:  # not a hyper-parameter: a checkpoint of this module already holds the weights
            self.init_weights_from(init_from)
        self.model.activation_checkpointing = bool(activation_checkpointing)
        self.compile_blocks = bool(compile)
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.decay_embeddings = bool(decay_embeddings)
        self.val_loss = MeanMetric()
        self.val_language_loss: LanguageLoss | None = None  # set up when the data names languages (setup)
        self.last_validation: tuple[float | None, int | None] = (None, None)  # (val/loss, step), for checkpoints
        self.flops_per_batch: int | None = None  # read by the throughput monitor (one micro batch, one device)
        self.analytic_flops_per_batch: float | None = None

    def init_weights_from(self, path: str) -> None:
        """Start from the weights of any checkpoint ``santacoder.load`` reads (shapes must match)."""
        self.model.load_state_dict(load(path).state_dict())

    def configure_model(self) -> None:
        if self.compile_blocks and not getattr(self, "_compiled", False):
            for block in self.model.transformer.h:
                block.compile()  # in place: the module tree and state_dict keys do not change
            self._compiled = True

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        languages = getattr(datamodule, "val_languages", None)
        if languages and self.val_language_loss is None:  # prepared data: its shards name each document's language
            self.val_language_loss = LanguageLoss(languages)
        if stage != "fit" or datamodule is None or self.flops_per_batch is not None:
            return
        trainer = self.trainer
        micro = datamodule.micro_batch_size(trainer.world_size, trainer.accumulate_grad_batches)
        seq_len = datamodule.seq_len
        # the FLOPs of one micro batch on one device, as Lightning's Throughput counts them
        self.flops_per_batch = measured_flops_per_batch(self.config, micro, seq_len)
        self.analytic_flops_per_batch = analytic_flops_per_token(self.config, seq_len) * micro * seq_len

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over labelled tokens (``<fim-pad>`` positions carry no label), computed inside the
        model (see ``GPT.forward``)."""
        return self.model(batch["input_ids"], labels=batch["labels"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # token-weighted mean over the split; the count stays a tensor (no device sync per batch)
        n_tokens = (batch["labels"] != IGNORE_INDEX).sum()
        if self.val_language_loss is None or "language" not in batch:
            self.val_loss.update(self.loss(batch).detach(), weight=n_tokens)
            return
        # one forward for both: each token's loss, then their mean, and their sums per language
        token_losses = self.model(batch["input_ids"], labels=batch["labels"], per_token_loss=True)
        self.val_loss.update(token_losses.sum() / n_tokens.clamp(min=1), weight=n_tokens)
        self.val_language_loss.update(token_losses, batch["labels"], batch["language"])

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss), sync_dist=False)
        if self.val_language_loss is not None and self.val_language_loss.update_called:
            for language, value in self.val_language_loss.compute().items():
                self.log(f"val/loss/{language}", value, sync_dist=False)  # summed over ranks by compute()
            self.val_language_loss.reset()
        if not self.trainer.sanity_checking:  # for the checkpoints written after it (santacoder info)
            self.last_validation = (float(loss), self.trainer.global_step)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The configured optimizer over this module's weight-decay groups (also what the benchmarks step)."""
        opt_cfg = dict(self.optimizer_cfg)
        weight_decay = opt_cfg.pop("weight_decay", 0.0)
        return instantiate(opt_cfg)(parameter_groups(self.model, weight_decay, self.decay_embeddings))

    def configure_optimizers(self):
        if self.optimizer_cfg is None or self.scheduler_cfg is None:
            raise ConfigError(
                "this module has no optimizer or scheduler config (it was rebuilt from a converted checkpoint); "
                "to train from these weights use model.init_from=<checkpoint> with the configs of configs/model/"
            )
        optimizer = self.make_optimizer()
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(dict(self.scheduler_cfg))(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The W&B run is remembered so that resuming from this checkpoint continues it (see train.py)
        wandb_ids = [lg.version for lg in self.trainer.loggers if type(lg).__name__ == "WandbLogger"]
        val_loss, val_step = self.last_validation  # this process's newest validation, if any yet
        stamp(checkpoint, wandb_run_id=wandb_ids[0] if wandb_ids else None, val_loss=val_loss, val_step=val_step)
        checkpoint[RNG_KEY] = self._rng_states()
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is not None:  # the checkpoint is usable on its own: santacoder.load_tokenizer(ckpt)
            attach_tokenizer(checkpoint, tokenizer)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        read_meta(checkpoint)  # refuses a file of a newer format before Lightning restores anything from it
        self._restore_rng_states(checkpoint.get(RNG_KEY))
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is not None:  # Lightning restores the data module's state next, found by its class's name
            adopt_data_state(checkpoint, datamodule)

    # Dropout draws from torch's global generators, so an exact resume needs each rank's generator state: the
    # data loaders have their own generators (CodeDataModule) and never draw from these.
    def _rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's torch generator states, ``{"cpu": [world_size, n]}`` (and "cuda" on a GPU)."""
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.trainer.world_size == 1:
            return {name: state[None] for name, state in states.items()}
        gather = self.trainer.strategy.all_gather  # a collective: every rank saves (Lightning calls it on all)
        return {name: gather(state.to(self.device)).cpu() for name, state in states.items()}

    def _restore_rng_states(self, states: dict | None) -> None:
        trainer = self._trainer
        if not states or trainer is None:
            return
        rank, world = trainer.global_rank, trainer.world_size
        if states["cpu"].shape[0] != world:
            rank_zero_warn(
                f"the checkpoint holds the random generator states of {states['cpu'].shape[0]} ranks, this run has "
                f"{world}: dropout masks will differ from an uninterrupted run's (the data order does not)"
            )
            return
        torch.set_rng_state(states["cpu"][rank].clone())  # a tensor of its own: a row view crashes it
        if "cuda" in states and self.device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda"][rank].clone(), self.device)
