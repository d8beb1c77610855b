"""Train a SantaCoder-style model: `python train.py [hydra overrides]` (see configs/train.yaml)."""

import hydra

from santacoder.conf.resolvers import setup_hydra
from santacoder.conf.run_config import record_root_dir
from santacoder.training.task import main as train_main

# data/ and logs/ go under PROJECT_ROOT, else this checkout; the run's saved config names the path itself
record_root_dir()
setup_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    return train_main(cfg)


if __name__ == "__main__":
    main()
