"""Every config group composes and instantiates; the 1.1B config matches the paper's model."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from santacoder.model import GPTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "data", "trainer", "logger", "callbacks", "debug", "experiment"])
def test_group_options_compose(compose_train, group, corpus_dir):
    for option in options(group):
        overrides = [f"{group}={option}"]
        if group == "experiment":
            overrides += [f"data.source={corpus_dir}", "data.tokenizer=null"]
        cfg = compose_train(*overrides)
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        assert cfg.model.config.n_layer > 0


@pytest.mark.parametrize("option", [o for o in options("trainer") if o != "fsdp"])
def test_trainers_instantiate(compose_train, option, tmp_path):
    cfg = compose_train(
        f"trainer={option}", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.trainer.max_steps


def test_fsdp_strategy_wraps_and_checkpoints_blocks(compose_train):
    from lightning.pytorch.strategies import FSDPStrategy

    from santacoder.model import Block

    cfg = compose_train("trainer=fsdp", "trainer.strategy.activation_checkpointing=true")
    strategy = instantiate(cfg.trainer.strategy)  # Lightning's FSDP needs a GPU to build a Trainer, not this
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy.kwargs["use_orig_params"]  # parameter names (and weight-decay groups) survive wrapping
    assert cfg.trainer.precision == "bf16-mixed"


def test_gpu_trainers_default_to_fp16_like_santacoder(compose_train):
    for option in ("gpu", "ddp"):
        assert compose_train(f"trainer={option}").trainer.precision == "16-mixed"
    assert compose_train("trainer=ddp_bf16").trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("option", options("logger"))
def test_loggers_instantiate(compose_train, option, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(f"logger={option}")
    loggers = [instantiate(node) for node in cfg.logger.values()]
    assert loggers
    for lg in loggers:
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            lg.experiment.finish()


@pytest.mark.parametrize("option", options("callbacks"))
def test_callbacks_instantiate(compose_train, option):
    cfg = compose_train(f"callbacks={option}")
    for node in (cfg.callbacks or {}).values():
        instantiate(node)


def test_model_configs_instantiate(compose_train):
    for option in options("model"):
        cfg = compose_train(f"model={option}", "model.config.vocab_size=4096", "model.config.n_layer=1")
        module = instantiate(cfg.model)
        assert module.config.n_layer == 1


def test_data_config_instantiates(compose_train, corpus_dir):
    cfg = compose_train(f"data.source={corpus_dir}")
    dm = instantiate(cfg.data)
    assert dm.batch_size == cfg.data.batch_size and dm.source == str(corpus_dir)


def test_santacoder_1b_yaml_is_the_preset(compose_train):
    cfg = compose_train("model=santacoder_1b")
    fields = OmegaConf.to_container(cfg.model.config, resolve=True)
    assert GPTConfig(**fields) == GPTConfig.from_name("santacoder-1b", initializer_range=0.022)


def test_santacoder_1b_experiment_has_the_papers_settings(compose_train, corpus_dir):
    cfg = compose_train("experiment=santacoder_1b", f"data.source={corpus_dir}", "data.tokenizer=null")
    assert (cfg.data.batch_size, cfg.data.seq_len) == (192, 2048)
    assert cfg.trainer.max_steps == 600_000 and cfg.trainer.precision == "16-mixed"
    assert (cfg.data.fim_rate, cfg.data.fim_spm_rate) == (0.5, 0.5)
    assert cfg.model.optimizer.lr == 2e-4 and list(cfg.model.optimizer.betas) == [0.9, 0.95]
    assert cfg.model.optimizer.weight_decay == 0.1 and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.model.scheduler.warmup_fraction == 0.02


def test_experiment_trains_a_tokenizer_that_fits_the_embedding(compose_train):
    cfg = compose_train("experiment=santacoder_1b")
    assert cfg.data.vocab_size <= cfg.model.config.vocab_size == 49280


def teardown_module():
    GlobalHydra.instance().clear()


def test_eval_free_compose_without_fixture():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["model.config.n_layer=2", "data.fim_rate=1.0", "trainer.max_steps=20"])
    assert cfg.model.config.n_layer == 2 and cfg.data.fim_rate == 1.0 and cfg.trainer.max_steps == 20
