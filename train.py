"""Train a SantaCoder-style model: `python train.py [hydra overrides]` (see configs/train.yaml)."""

import os
import sys
from pathlib import Path

import hydra

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

from santacoder.launch import non_zero_rank_overrides, register_resolvers  # noqa: E402
from santacoder.train import main as train_main  # noqa: E402

register_resolvers()
# Only rank 0 writes the run's .hydra/ config copy and log file; all ranks share the run directory.
sys.argv += [o for o in non_zero_rank_overrides() if o.split("=")[0] not in " ".join(sys.argv)]


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    return train_main(cfg)


if __name__ == "__main__":
    main()
