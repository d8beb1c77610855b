"""Prepare a corpus into token shards: `python prepare.py source=<path> out=<dir> tokenizer=<tokenizer.json>`
(see configs/prepare.yaml)."""

import hydra

from santacoder.conf.resolvers import setup_hydra
from santacoder.data.prepare.task import main as prepare_main

setup_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="prepare")
def main(cfg):
    return prepare_main(cfg)


if __name__ == "__main__":
    main()
