"""Training through the real configs: a short run learns, writes metrics.json and a checkpoint that loads;
bad configuration stops before training with one clear message."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder import ConfigError
from santacoder.training.module import SantaCoderLitModule
from santacoder.training.task import train

ROOT = Path(__file__).resolve().parents[1]


def module_flops_per_token(cfg) -> float:
    from santacoder import GPTConfig
    from santacoder.training.flops import measured_flops_per_batch

    fields = dict(cfg.model.config)
    return measured_flops_per_batch(GPTConfig(**fields), 1, cfg.data.seq_len) / cfg.data.seq_len


def small(corpus_dir) -> list[str]:
    """Overrides for a run that takes seconds: a 2-layer model on the test corpus."""
    return [
        *run_overrides.data(corpus_dir, seq_len=64, batch_size=8),
        *run_overrides.model(n_layer=2, n_embd=64, n_head=4, n_inner=256, n_positions=64),
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=40",
        "trainer.limit_val_batches=4",
        "extras.print_config=false",
    ]


@pytest.mark.integration
def test_short_run_learns_and_writes_metrics_and_checkpoint(compose_train, corpus_dir):
    # a peak of 1 TFLOP/s stands in for a GPU's, so MFU is computed on this CPU too
    cfg = compose_train(
        *small(corpus_dir),
        "trainer.max_steps=80",
        "callbacks.progress_bar.refresh_rate=0",
        "callbacks.throughput.peak_flops=1e12",
    )
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["step"] == 80 and saved["val/loss"] == pytest.approx(metrics["val/loss"])
    assert saved["val/ppl"] == pytest.approx(math.exp(saved["val/loss"]), rel=1e-4)
    # well below a uniform guess over the vocabulary (ln 512 = 6.24) after 80 tiny steps
    assert saved["val/loss"] < saved["uniform_loss"] - 0.5
    # one device: the global rates are the device's; a sample is seq_len (64) tokens
    assert saved["train/tokens_per_sec"] == pytest.approx(saved["train/device/tokens_per_sec"])
    assert saved["train/tokens_per_sec"] == pytest.approx(64 * saved["train/samples_per_sec"])
    # MFU = (FLOPs per batch x batches per second) / peak: consistent with the measured token rate
    flops_per_token = module_flops_per_token(cfg)
    expected_mfu = saved["train/device/tokens_per_sec"] * flops_per_token / 1e12
    assert saved["train/mfu"] == pytest.approx(expected_mfu, rel=0.05)
    # the run's CSV log shows the training loss falling
    rows = (out / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("train/loss")
    losses = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert max(losses[-5:]) < losses[0] - 0.7

    ckpt = out / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain values only
    assert state["hyper_parameters"]["config"]["n_layer"] == 2
    module = SantaCoderLitModule.load_from_checkpoint(ckpt, map_location="cpu")
    ids = torch.randint(0, 512, (1, 16))
    assert module(ids).shape == (1, 16, module.config.vocab_size)
    assert module.config.vocab_size == 512  # the tokenizer's 512 tokens, already a multiple of 128
    # started from Python (no Hydra run), the run still keeps its config copy, which eval.py reads
    copy = OmegaConf.load(out / ".hydra" / "config.yaml")
    assert copy.data.source == str(corpus_dir) and copy.model.config.vocab_size == 512


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["data.fim_rate=1.5"], "data.fim_rate=1.5 must be between 0 and 1"),
        (["data.seq_len=128"], "data.seq_len=128 is larger than model.config.n_positions=64"),
        (["data.source=/no/such/corpus"], "data.source='/no/such/corpus' does not exist"),
        (["model.config.n_head=3"], "model.config.n_embd=64 must be divisible by n_head=3"),
        (["model.config.vocab_size=300"], "model.config.vocab_size=300 is smaller than the tokenizer's 512"),
        (["data.batch_size=6", "trainer.accumulate_grad_batches=4"], "data.batch_size=6 .* must be divisible"),
        (["model.attn_impl=xformers"], "model.attn_impl=xformers needs a CUDA GPU"),
        (["model.attn_impl=flash"], "model.attn_impl='flash' must be one of"),
        (["trainer.accelerator=gpu"], "trainer.accelerator=gpu but this machine has no CUDA GPU"),
        (["model.optimizer.lr=-1"], r"model.optimizer.lr=-1 must be a number >= 0"),
        (["model.optimizer.weight_decay=-0.1"], r"model.optimizer.weight_decay=-0.1 must be >= 0"),
        (["model.optimizer.betas=[0.9,1.5]"], r"model.optimizer \(torch.optim.AdamW\) is invalid: .*beta"),
        (["model.scheduler.warmup_fraction=2"], r"model.scheduler.warmup_fraction=2 must be in \[0, 1\)"),
        (["data.max_doc_bytes=-1"], r"data.max_doc_bytes=-1 must be a positive integer"),
        (["model.loss_impl=fused"], r"model.loss_impl='fused' is not one of auto, chunked, full"),
        (["model.loss_chunk_size=0"], r"model.loss_chunk_size=0 must be a positive integer"),
        (
            ["trainer.accumulate_grad_batches=4", "trainer.val_check_interval=10"],
            r"val_check_interval=10 counts micro-batches.*use a multiple of 4, e.g. trainer.val_check_interval=8",
        ),
        (
            ["trainer=fsdp", "trainer.strategy.state_dict_type=sharded"],
            r"state_dict_type=sharded is not supported: .* use trainer.strategy.state_dict_type=full",
        ),
    ],
)
def test_bad_values_stop_before_training(compose_train, corpus_dir, overrides, match):
    if ("xformers" in overrides[0] or "gpu" in overrides[0]) and torch.cuda.is_available():
        pytest.skip("valid where CUDA exists")
    cfg = compose_train(*small(corpus_dir), *overrides)
    with pytest.raises(ConfigError, match=match):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_empty_corpus_stops_before_training(compose_train, tmp_path, corpus_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = compose_train(*small(corpus_dir), f"data.source={empty}")
    with pytest.raises(ConfigError, match="the corpus is empty"):
        train(cfg)


def run_train_py(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROJECT_ROOT": str(cwd), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.integration
def test_fast_dev_run_through_hydra(corpus_dir, tmp_path):
    result = run_train_py("debug=fdr", *small(corpus_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "logs" / "debug" / "runs").is_dir()


@pytest.mark.integration
def test_cli_reports_bad_values_and_unknown_keys_in_one_line(corpus_dir, tmp_path):
    bad = run_train_py(*small(corpus_dir), "data.fim_rate=1.5", cwd=tmp_path)
    assert bad.returncode == 1
    assert "error: data.fim_rate=1.5 must be between 0 and 1" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert (bad.stdout + bad.stderr).count("must be between 0 and 1") == 1, "said once, not logged and printed"
    assert list((tmp_path / "logs" / "train" / "runs").iterdir()) == [], "a refused run leaves no directory"
    unknown = run_train_py("data.fim_rat=0.5", cwd=tmp_path)
    assert unknown.returncode != 0
    assert "Key 'fim_rat' is not in struct" in unknown.stderr
