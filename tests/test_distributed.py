"""Multi-process training on CPU with the gloo backend: Lightning's DDP launcher, a two-"node" torchrun job
on 127.0.0.1, fp16 loss scaling, the full-size 1.1B model for one step, and the Hydra multirun guard."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder import ConfigError, GPTConfig
from santacoder.training.flops import measured_flops_per_batch
from santacoder.training.preflight import refuse_multirun_with_ddp
from santacoder.training.task import train

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def overrides(corpus_dir, record_dir: Path, *extra: str) -> list[str]:
    return [
        *run_overrides.data(corpus_dir, seq_len=32, batch_size=8),
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=32),
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=2",
        "extras.print_config=false",
        "+callbacks.record._target_=helpers_record.RecordBatches",
        f"+callbacks.record.out_dir={record_dir}",
        *extra,
    ]


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PROJECT_ROOT": str(tmp_path),
        "PYTHONPATH": pythonpath,
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def run(cmd: list[str], tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, cwd=tmp_path, env=env(tmp_path, **extra_env), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def records(record_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(record_dir.glob("rank*.json"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_cpu_two_processes_see_disjoint_samples(corpus_dir, tmp_path):
    record_dir = tmp_path / "record"
    run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "trainer=ddp_cpu",
            "trainer.devices=2",
            "callbacks.throughput.window_size=3",
            "callbacks.throughput.peak_flops=1e12",  # a stand-in peak, so MFU is computed on CPU too
            *overrides(corpus_dir, record_dir),
        ],
        tmp_path,
    )
    ranks = records(record_dir)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert len(ranks[0]["samples"]) == len(ranks[1]["samples"]) == 6 * 4  # 6 steps x micro batch 8 / 2
    assert not set(ranks[0]["samples"]) & set(ranks[1]["samples"])
    runs = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1  # both ranks wrote into one run directory
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file() and (runs[0] / "metrics.json").is_file()
    # throughput: global = 2 x per device; MFU per device from the FLOPs of one device's micro batch (4 x 32)
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["train/tokens_per_sec"] == pytest.approx(2 * metrics["train/device/tokens_per_sec"])
    config = GPTConfig(vocab_size=512, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64)
    flops_per_token = measured_flops_per_batch(config, 4, 32) / (4 * 32)
    expected_mfu = metrics["train/device/tokens_per_sec"] * flops_per_token / 1e12
    assert metrics["train/mfu"] == pytest.approx(expected_mfu, rel=0.05)


@pytest.mark.slow
def test_two_node_torchrun_matches_single_process(corpus_dir, tmp_path):
    """scripts/torchrun.sh with --nnodes 2, both node ranks on 127.0.0.1, trains to the same losses as one
    process with the same global batch, seed and no dropout."""
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    common = ["data.fim_rate=0.5"]
    run([sys.executable, str(ROOT / "train.py"), "trainer=cpu", *overrides(corpus_dir, single_dir, *common)], tmp_path)

    port = str(free_port())
    procs = [
        subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "torchrun.sh"), *overrides(corpus_dir, multi_dir, *common)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(
                tmp_path,
                NNODES="2",
                NODE_RANK=str(rank),
                GPUS_PER_NODE="1",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                RUN_ID="two-nodes",
                TRAINER="ddp_cpu",
                PYTHON=sys.executable,
            ),
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)

    single, multi = records(single_dir), records(multi_dir)
    assert multi[0]["world_size"] == 2
    # the two ranks' micro batches together are exactly the single process's batches
    assert sorted(multi[0]["samples"] + multi[1]["samples"]) == sorted(single[0]["samples"])
    torch.testing.assert_close(
        torch.tensor(multi[0]["losses"]), torch.tensor(single[0]["losses"]), rtol=1e-4, atol=1e-5
    )
    run_dir = tmp_path / "logs" / "train" / "runs" / "two-nodes"  # PROJECT_ROOT=tmp_path
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # only rank 0 wrote the config copy and the log
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    log_text = (run_dir / "train.log").read_text()
    assert log_text.count("final metrics") == 1


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        ),
    ],
)
def test_fp16_overflowing_steps_are_skipped_and_counted(device):
    """Dynamic loss scaling with 16-mixed: an overflowing step (a forced inf loss, whose gradients through the
    chunked loss are inf) is skipped, counted, and the scale halves; the weights stay finite. On a GPU with
    Lightning's own scaler; on CPU (where Lightning builds none) with a CPU GradScaler running the same logic."""
    import lightning as L
    from lightning.pytorch.plugins import MixedPrecision
    from torch.utils.data import DataLoader

    from santacoder.training.callbacks import LossScaleMonitor
    from santacoder.training.module import SantaCoderLitModule

    class Overflowing(SantaCoderLitModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * (float("inf") if batch_idx in (0, 2, 5) else 1.0)  # the very first step too

    torch.manual_seed(0)
    module = Overflowing(
        dict(vocab_size=128, n_positions=16, n_embd=32, n_layer=1, n_head=2), **run_overrides.training_options()
    )
    data = [{"input_ids": torch.randint(0, 128, (2, 16)), "labels": torch.randint(0, 128, (2, 16))} for _ in range(8)]
    monitor = LossScaleMonitor()
    precision = {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=65536.0))]}
    if device == "cuda":
        precision = {"precision": "16-mixed", "devices": 1}  # Lightning's GradScaler, initial scale 65536
    trainer = L.Trainer(
        accelerator=device,
        **precision,
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        callbacks=[monitor],
        enable_progress_bar=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(module, DataLoader(data, batch_size=None))
    assert monitor.skipped_steps == 3
    assert trainer.callback_metrics["train/loss_scale"] == 65536.0 / 8
    assert all(torch.isfinite(p).all() for p in module.parameters())  # the inf gradients were never applied


@pytest.mark.slow
def test_santacoder_1b_experiment_runs_one_step_on_cpu(compose_train, corpus_dir, tokenizer, tmp_path):
    """The paper's full-size model and settings, with seq_len shortened and bf16 so it fits a CPU box."""
    tok_file = tmp_path / "tokenizer.json"
    tokenizer.save(tok_file)
    cfg = compose_train(
        "experiment=santacoder_1b",
        f"data.source={corpus_dir}",
        f"data.tokenizer={tok_file}",
        "data.seq_len=32",
        "data.batch_size=1",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.precision=bf16-true",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "trainer.limit_val_batches=1",
        "logger=csv",
        "extras.print_config=false",
        "callbacks.model_checkpoint.save_last=false",
        "callbacks.model_checkpoint.save_top_k=0",
    )
    metrics = train(cfg)
    assert metrics["num_params"] == 1_124_886_528
    assert metrics["step"] == 1 and torch.isfinite(torch.tensor(metrics["val/loss"]))


def test_multirun_with_ddp_is_refused(compose_train):
    from hydra.types import RunMode

    cfg = compose_train("trainer=ddp_cpu")
    hydra_cfg = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN}})
    HydraConfig.instance().cfg = hydra_cfg
    try:
        with pytest.raises(ConfigError, match="Hydra multirun .* cannot be combined with a multi-process trainer"):
            refuse_multirun_with_ddp(cfg)
        refuse_multirun_with_ddp(compose_train("trainer=cpu"))  # single process: sweeping is fine
    finally:
        HydraConfig.instance().cfg = None
