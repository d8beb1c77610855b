"""The Hydra configs: every option composes and resolves, model files build their Python presets, loggers
write into the run directory, and trainers this machine cannot run are refused before any work."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder import GPT, ConfigError, GPTConfig
from santacoder.conf.run_ids import is_global_rank_zero
from santacoder.training.module import parameter_groups
from santacoder.training.task import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "data", "trainer", "logger", "callbacks", "debug", "experiment"])
def test_group_options_compose_and_resolve(compose_train, group, corpus_dir):
    for option in options(group):
        overrides = [f"{group}={option}"]
        if group == "experiment":
            overrides += [f"data.source={corpus_dir}", "data.tokenizer=null"]
        OmegaConf.to_container(compose_train(*overrides), resolve=True)  # raises on a broken interpolation


@pytest.mark.parametrize(
    "option,preset,decay_embeddings", [("tiny", "tiny", False), ("santacoder_1b", "santacoder-1b", True)]
)
def test_model_files_build_their_preset(compose_train, option, preset, decay_embeddings):
    cfg = compose_train(f"model={option}", "model.config.vocab_size=49280")  # tiny's is null: from the tokenizer
    with torch.device("meta"):
        module = instantiate(cfg.model)
        expected = GPT(GPTConfig.from_name(preset, vocab_size=49280))
    assert module.config == expected.config
    assert module.model.num_params() == expected.num_params()
    if option == "santacoder_1b":
        assert module.model.num_params() == 1_124_886_528
    # the weight-decay groups: SantaCoder's Megatron-LM decays the embeddings, tiny exempts them as nanoGPT does
    groups = parameter_groups(module.model, 0.1, module.decay_embeddings)
    decayed = {id(p) for p in groups[0]["params"]}
    assert (id(module.model.transformer.wte.weight) in decayed) is decay_embeddings
    assert not decayed & {id(p) for n, p in module.model.named_parameters() if n.endswith("bias") or ".ln_" in n}


def test_a_shape_field_overrides_the_preset(compose_train):
    cfg = compose_train("model=santacoder_1b", "model.config.n_layer=2")
    assert GPTConfig(**cfg.model.config) == GPTConfig.from_name("santacoder-1b", n_layer=2)


def test_data_config_reads_santacoders_languages(compose_train, corpus_dir):
    dm = instantiate(compose_train(f"data.source={corpus_dir}").data)
    names = {doc.name for doc in dm.corpus}
    assert {"Hello.java", "add.js", "json/decoder.py"} <= names and "notes.md" not in names


def test_fsdp_strategy_wraps_and_checkpoints_blocks(compose_train):
    from lightning.pytorch.strategies import FSDPStrategy

    from santacoder.model.gpt import Block

    cfg = compose_train("trainer=fsdp", "trainer.strategy.activation_checkpointing=true")
    strategy = instantiate(cfg.trainer.strategy)  # Lightning's FSDP needs a GPU to build a Trainer, not this
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy.kwargs["use_orig_params"]  # parameter names (and weight-decay groups) survive wrapping


def test_gpu_trainers_default_to_fp16_like_santacoder(compose_train):
    for option in ("gpu", "ddp"):
        assert compose_train(f"trainer={option}").trainer.precision == "16-mixed"
    assert compose_train("trainer=ddp_bf16").trainer.precision == "bf16-mixed"
    assert compose_train("trainer=fsdp").trainer.precision == "bf16-mixed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("option", ["gpu", "ddp", "ddp_bf16", "fsdp"])
def test_gpu_trainers_are_refused_without_cuda_before_any_work(compose_train, corpus_dir, option, tmp_path):
    cfg = compose_train(
        f"trainer={option}", *run_overrides.data(corpus_dir, seq_len=32, batch_size=8), "extras.print_config=false"
    )
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")  # its own: nothing may appear there
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu but this machine has no CUDA GPU"):
        train(cfg)
    assert not Path(cfg.paths.data_dir).exists()  # no tokenizer trained, nothing cached


@pytest.mark.parametrize("option", options("logger"))
def test_loggers_write_into_the_run_directory(compose_train, option, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(f"logger={option}")
    for name, package in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        if name in cfg.logger:  # scripts/gpu_check runs on nodes without these packages
            pytest.importorskip(package, reason=f"{package} is not installed")
    out = Path(cfg.paths.output_dir)
    loggers = [instantiate(node) for node in cfg.logger.values()]
    for lg in loggers:
        lg.log_metrics({"train/loss": 1.0}, step=0)
        lg.finalize("success")
        if type(lg).__name__ == "WandbLogger":
            lg.experiment.finish()
    expected = {
        "CSVLogger": "csv/metrics.csv",
        "TensorBoardLogger": "tensorboard/events.out.tfevents.*",
        "WandbLogger": "wandb/offline-run-*/run-*.wandb",
    }
    for lg in loggers:
        assert list(out.glob(expected[type(lg).__name__])), f"{type(lg).__name__} wrote nothing under {out}"


def test_santacoder_1b_experiment_has_the_papers_settings(compose_train, corpus_dir):
    cfg = compose_train("experiment=santacoder_1b", f"data.source={corpus_dir}", "data.tokenizer=null")
    assert (cfg.data.batch_size, cfg.data.seq_len) == (192, 2048)
    assert cfg.trainer.max_steps == 600_000 and cfg.trainer.precision == "16-mixed"
    assert (cfg.data.fim_rate, cfg.data.fim_spm_rate) == (0.5, 0.5)
    assert cfg.model.optimizer.lr == 2e-4 and list(cfg.model.optimizer.betas) == [0.9, 0.95]
    assert cfg.model.optimizer.weight_decay == 0.1 and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.model.scheduler.warmup_fraction == 0.02 and cfg.model.decay_embeddings


def test_experiment_trains_a_tokenizer_that_fits_the_embedding(compose_train):
    cfg = compose_train("experiment=santacoder_1b")
    assert cfg.data.vocab_size <= cfg.model.config.vocab_size == 49280


@pytest.mark.parametrize(
    "env,rank_zero",
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun, rank 0
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),  # torchrun
        ({"SLURM_PROCID": "5"}, False),  # srun
        ({"LOCAL_RANK": "1"}, False),  # a process Lightning's launcher started on node 0
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # the first process of node 1
    ],
)
def test_global_rank_zero_from_the_launchers_environment(monkeypatch, env, rank_zero):
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_global_rank_zero() is rank_zero


def test_compose_from_python_needs_no_hydra_run_and_builds_what_train_builds(monkeypatch, tmp_path, corpus_dir):
    """A notebook's path: no PROJECT_ROOT, no Hydra runtime; the root is the checkout (or root_dir), the output
    directory the run directory train.py would use, everything resolved; the same instantiate calls work."""
    import santacoder
    from santacoder.conf import build
    from santacoder.training.preflight import resolve_model_config

    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    cfg = santacoder.compose(["model.config.n_layer=1"])
    assert cfg.paths.root_dir == str(CONFIGS.parent)
    assert Path(cfg.paths.output_dir).parent == CONFIGS.parent / "logs" / "train" / "runs"
    assert "${" not in OmegaConf.to_yaml(cfg)  # resolved: nothing left that needs Hydra's runtime
    assert "hydra" not in cfg
    evaluation = santacoder.compose(["ckpt_path=some/run"], config_name="eval")
    assert Path(evaluation.paths.output_dir).parent == CONFIGS.parent / "logs" / "eval" / "runs"

    cfg = santacoder.compose(
        [*run_overrides.data(corpus_dir, seq_len=32, batch_size=4), "model.config.n_layer=1"], root_dir=tmp_path
    )
    assert cfg.paths.data_dir == str(tmp_path / "data")
    datamodule = build(cfg, "data")
    assert datamodule.tokenizer_size() == 512
    resolve_model_config(cfg, datamodule.tokenizer_size())  # vocab_size from the tokenizer, as train() does
    model = build(cfg, "model")
    assert len(model.model.transformer.h) == 1
    assert build(cfg, "trainer").max_steps == cfg.trainer.max_steps
    with pytest.raises(ConfigError, match="no nope.yaml"):
        santacoder.compose(config_name="nope")


def test_a_run_saved_with_the_environment_root_reads_without_it(monkeypatch):
    """Runs saved before the root was recorded keep ${oc.env:PROJECT_ROOT}; read from a notebook (no such
    variable) their paths resolve to this checkout, where train.py would have put them."""
    from santacoder.conf.compose import REPO
    from santacoder.conf.run_config import load_run_config

    run = Path(__file__).resolve().parent / "data" / "legacy_run" / "run"
    assert "${oc.env:PROJECT_ROOT}" in (run / ".hydra" / "config.yaml").read_text()
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    cfg = load_run_config(run)
    assert cfg.paths.data_dir == str(REPO / "data") and cfg.paths.output_dir == str(run)
    monkeypatch.setenv("PROJECT_ROOT", "/elsewhere")
    assert load_run_config(run).paths.log_dir == "/elsewhere/logs"


def test_entry_points_record_the_root_on_their_command_line(monkeypatch):
    from santacoder.conf.run_config import record_root_dir

    monkeypatch.setenv("PROJECT_ROOT", "/proj")
    argv = ["train.py", "trainer.max_steps=2"]
    record_root_dir(argv)
    assert argv == ["train.py", "trainer.max_steps=2", "paths.root_dir=/proj"]
    given = ["train.py", "paths.root_dir=/mine"]
    record_root_dir(given)
    assert given == ["train.py", "paths.root_dir=/mine"]  # the user's own value stays
