"""Weights & Biases in offline mode: the run directory holds the metrics history and the resolved config,
and resuming from a checkpoint continues the same W&B run."""

from pathlib import Path

import pytest

pytest.importorskip("wandb", reason="W&B is not installed (scripts/gpu_check runs on nodes without it)")

import run_overrides  # noqa: E402 (tests/run_overrides.py; pytest puts tests/ on sys.path)
from santacoder.training.task import train  # noqa: E402
from wandb_records import config, history, run_id  # noqa: E402

pytestmark = pytest.mark.integration


def small(corpus_dir, *extra: str) -> list[str]:
    return [
        *run_overrides.data(corpus_dir, seq_len=32, batch_size=4),
        *run_overrides.model(n_layer=1, n_embd=32, n_head=2, n_inner=64, n_positions=32),
        "trainer.accelerator=cpu",
        "trainer.val_check_interval=5",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        "extras.print_config=false",
        "logger=wandb",
        "logger.wandb.offline=true",
        "task_name=wandb_test",
        "tags=[test,offline]",
        *extra,
    ]


def run_log(output_dir: Path) -> list[Path]:
    return sorted(Path(output_dir).glob("wandb/offline-run-*/run-*.wandb"))


def test_offline_run_records_history_and_resolved_config(compose_train, corpus_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(*small(corpus_dir, "trainer.max_steps=10"))
    metrics = train(cfg)
    (log_file,) = run_log(cfg.paths.output_dir)
    rows = history(log_file)
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    assert len(losses) == 10 and losses[-1] == pytest.approx(metrics["train/loss"])  # every step, the run's values
    assert [row["val/loss"] for row in rows if "val/loss" in row][-1] == pytest.approx(metrics["val/loss"])
    logged = config(log_file)
    assert logged["model"]["config"]["n_layer"] == 1  # the full resolved config, interpolations resolved
    assert logged["data"]["source"] == str(corpus_dir)
    assert logged["paths"]["output_dir"] == cfg.paths.output_dir


def test_resuming_continues_the_same_wandb_run(compose_train, corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = compose_train(*small(corpus_dir, "trainer.max_steps=5"))
    train(first)
    (first_log,) = run_log(first.paths.output_dir)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"

    second = compose_train(*small(corpus_dir, "trainer.max_steps=8", f"ckpt_path={ckpt}"))
    second.paths.output_dir = str(tmp_path / "resumed")
    train(second)
    (second_log,) = run_log(second.paths.output_dir)
    assert run_id(second_log) == run_id(first_log)
    steps = [row["trainer/global_step"] for row in history(second_log) if "train/loss" in row]
    assert min(steps) >= 5  # the resumed run continues from step 5


def test_online_without_an_api_key_stops_in_one_line_before_training(corpus_dir, tmp_path):
    """No key, no WANDB_MODE, no terminal to ask on: train.py stops with one line naming the remedy, before the
    first step, not with wandb's traceback from inside the fit. A process of its own: wandb reads its
    environment once per process, and other tests here have started it offline."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env |= {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "PROJECT_ROOT": str(tmp_path)}
    script = Path(__file__).resolve().parents[1] / "train.py"
    done = subprocess.run([sys.executable, str(script), *small(corpus_dir, "trainer.max_steps=3"),
                           "logger.wandb.offline=false"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "logger=wandb could not start a W&B run" in errors[0], done.stderr[-3000:]
    assert "API key" in errors[0] and "WANDB_MODE=offline" in errors[0] and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("logs/*/runs/*/checkpoints"))
