"""Hydra overrides shared by the tests that train (the test corpus and a model small enough for seconds), and
the data module built from configs/data/code.yaml with a few values replaced."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import santacoder
from santacoder.conf import build

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATA_YAML = CONFIGS / "data" / "code.yaml"
MODULE_YAML = CONFIGS / "model" / "module" / "default.yaml"


def data(corpus_dir, seq_len: int, batch_size: int) -> list[str]:
    """The test corpus with a 512-token tokenizer, loaded in the main process."""
    return [
        f"data.source={corpus_dir}",
        "data.vocab_size=512",
        f"data.seq_len={seq_len}",
        f"data.batch_size={batch_size}",
        "data.num_workers=0",
        "data.val_fraction=0.1",
    ]


def model(n_layer: int, n_embd: int, n_head: int, n_inner: int, n_positions: int) -> list[str]:
    return [
        f"model.config.n_layer={n_layer}",
        f"model.config.n_embd={n_embd}",
        f"model.config.n_head={n_head}",
        f"model.config.n_inner={n_inner}",
        f"model.config.n_positions={n_positions}",
    ]


def datamodule(**values):
    """``CodeDataModule`` with the defaults of configs/data/code.yaml (their only copy) and ``values`` replaced;
    ``seed`` and ``cache_dir`` must be given (the YAML takes them from other config groups)."""
    node = OmegaConf.load(DATA_YAML)
    node.merge_with(values)
    return build(OmegaConf.create({"data": node}), "data")  # a ConfigError comes out as itself, as in train.py


def training_options() -> dict:
    """``optimizer``, ``scheduler`` and ``decay_embeddings`` for a hand-built ``SantaCoderLitModule``, read from
    configs/model/module/default.yaml (their only copy)."""
    node = OmegaConf.to_container(OmegaConf.load(MODULE_YAML))
    return {key: node[key] for key in ("optimizer", "scheduler", "decay_embeddings")}


def compose_config(name: str, output_dir: Path, data_dir: Path, *overrides: str) -> DictConfig:
    """Compose configs/<name>.yaml with overrides, as `python <name>.py <overrides>` would, writing into
    ``output_dir`` and ``data_dir`` (unresolved, so a test may still move ``paths.output_dir``)."""
    return santacoder.compose(
        [*overrides, f"paths.data_dir={data_dir}"], config_name=name, output_dir=output_dir, resolve=False
    )
