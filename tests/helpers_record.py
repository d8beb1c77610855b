"""A callback for distributed tests, imported by train.py subprocesses (tests/ is put on PYTHONPATH):
records each rank's sample fingerprints and the global training loss of every step."""

import hashlib
import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class RecordBatches(Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.samples: list[str] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for row in batch["input_ids"]:
            self.samples.append(hashlib.sha1(row.numpy().tobytes()).hexdigest())
        # mean of the ranks' mean losses = the loss of the global batch when ranks hold equal token counts
        self.losses.append(float(trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")))

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "samples": self.samples,
            "losses": self.losses,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
