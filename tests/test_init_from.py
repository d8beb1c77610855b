"""`model.init_from`: training starts from the weights of another checkpoint, with its shape."""

from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder import GPT, ConfigError, GPTConfig, save_hf
from santacoder.conf import build
from santacoder.evaluation.perplexity import perplexity
from santacoder.training.task import train


def overrides(corpus_dir, init_from, *extra: str) -> list[str]:
    return [
        *run_overrides.data(corpus_dir, seq_len=32, batch_size=4),
        "trainer.accelerator=cpu",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "trainer.limit_val_batches=1",
        "extras.print_config=false",
        f"model.init_from={init_from}",
        *extra,
    ]


@pytest.fixture()
def hf_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, n_positions=64, n_embd=48, n_layer=3, n_head=4))
    return save_hf(model, tmp_path / "hf")


@pytest.mark.integration
def test_training_starts_from_the_checkpoint_weights_and_shape(compose_train, corpus_dir, hf_dir):
    # lr 0: after one step the weights are still exactly the ones loaded
    cfg = compose_train(*overrides(corpus_dir, hf_dir, "model.optimizer.lr=0.0"))
    metrics = train(cfg)
    assert cfg.model.config.n_layer == 3 and cfg.model.config.n_embd == 48  # shape from the checkpoint
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    from santacoder import load

    reference = load(hf_dir)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(state[f"model.{name}"], tensor, msg=name)
    # and validated with them: the run's val/loss is the loaded model's loss on the same batch, computed apart
    datamodule = build(cfg, "data")
    datamodule.setup("validate")
    expected = perplexity(reference, datamodule.val_dataloader(), limit_batches=1)["val/loss"]
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_a_conflicting_shape_override_is_an_error(compose_train, corpus_dir, hf_dir):
    cfg = compose_train(*overrides(corpus_dir, hf_dir, "model.config.n_layer=2"))
    from hydra.types import RunMode

    hydra_node = {"mode": RunMode.RUN, "overrides": {"task": ["model.config.n_layer=2"]}}
    HydraConfig.instance().cfg = OmegaConf.create({"hydra": hydra_node})
    try:
        with pytest.raises(ConfigError, match="model.config.n_layer=2 conflicts with model.init_from=.* n_layer is 3"):
            train(cfg)
    finally:
        HydraConfig.instance().cfg = None


def test_a_missing_init_checkpoint_is_an_error(compose_train, corpus_dir, tmp_path):
    cfg = compose_train(*overrides(corpus_dir, tmp_path / "nothing-here"))
    with pytest.raises(ConfigError):
        train(cfg)
