"""`eval.py` on a trained run: perplexity reproduces the run's last val/loss, results go to eval.json and the
loggers, and humaneval runs no code unless allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

import run_overrides
from santacoder.evaluation.evaluate import evaluate
from santacoder.train import train

ROOT = Path(__file__).resolve().parents[1]


def compose_eval(tmp_path: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
        cfg.paths.data_dir = str(tmp_path / "data")
    return cfg


@pytest.fixture()
def trained_run(compose_train, corpus_dir, tmp_path) -> Path:
    cfg = compose_train(
        *run_overrides.data(corpus_dir, seq_len=32, batch_size=4),
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=64),
        "trainer.accelerator=cpu",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=3",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(exist_ok=True)  # what Hydra writes for `python train.py`: the composed config
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return run


@pytest.mark.slow
def test_eval_reproduces_the_runs_val_loss_and_reports_every_task(trained_run, tmp_path, caplog):
    cfg = compose_eval(
        tmp_path,
        f"ckpt_path={trained_run}",
        "device=cpu",
        "tasks.perplexity.limit_batches=3",
        "tasks.fim_single_line.limit=3",
        "tasks.fim_single_line.max_new_tokens=8",
    )
    metrics = evaluate(cfg)
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(trained["val/loss"], rel=1e-5)
    assert metrics["val/fim_rate"] == 0.5  # as the run validated
    assert metrics["fim/python/tasks"] == 3 and 0 <= metrics["fim/python/exact_match"] <= 1
    assert not any(k.startswith("humaneval/") for k in metrics)
    assert "humaneval skipped: it runs generated code; set allow_code_execution=true" in caplog.text
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["metrics"] == metrics
    assert "val/loss" in (tmp_path / "eval" / "csv" / "metrics.csv").read_text().splitlines()[0]
    off = evaluate(compose_eval(tmp_path, f"ckpt_path={trained_run}", "device=cpu", "tasks.perplexity.fim=off",
                                "tasks.fim_single_line.enabled=false", "tasks.humaneval.enabled=false"))  # fmt: skip
    assert off["val/fim_rate"] == 0.0 and off["val/loss"] != metrics["val/loss"]
