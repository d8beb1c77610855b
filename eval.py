"""Evaluate a model: `python eval.py ckpt_path=<run dir | .ckpt | HF dir | Megatron dir>` (see configs/eval.yaml)."""

import hydra

from santacoder.conf.resolvers import setup_hydra
from santacoder.conf.run_config import record_root_dir
from santacoder.evaluation.task import main as eval_main

# data/ and logs/ go under PROJECT_ROOT, else this checkout; the run's saved config names the path itself
record_root_dir()
setup_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg):
    return eval_main(cfg)


if __name__ == "__main__":
    main()
