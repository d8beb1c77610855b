"""Writes tests/data/format0.ckpt: a checkpoint as this project wrote them before checkpoints had a format
version (commit 5cb447f). Kept to show how the fixture was made; run it against that commit's package:

    git worktree add /tmp/old 5cb447f
    PYTHONPATH=/tmp/old/src WANDB_MODE=offline python tests/data/write_format0_checkpoint.py tests/data/format0.ckpt

A tiny model trained two steps on a GPU-style config: `attn_impl: xformers` is stored in its model config (the
steps ran with sdpa, as they must on a CPU), W&B logged offline, so `wandb_run_id` sits at the top level.
"""

import sys
import tempfile

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from santacoder.lit_module import SantaCoderLitModule

torch.manual_seed(0)
config = dict(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, attn_impl="xformers")
module = SantaCoderLitModule(config)
for block in module.model.transformer.h:
    block.attn.attn_impl = "sdpa"  # how a GPU-trained model was run on a CPU before the backend left the config
batches = [{"input_ids": torch.randint(0, 64, (2, 16)), "labels": torch.randint(0, 64, (2, 16))} for _ in range(2)]
with tempfile.TemporaryDirectory() as tmp:
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=WandbLogger(project="format0", save_dir=tmp, offline=True),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    trainer.save_checkpoint(sys.argv[1])
    trainer.logger.experiment.finish()
