"""scripts/gpu_check and scripts/gpu_measure.py without a GPU, so they do not rot between GPU slots: the
measurement runs the tiny model on CPU through the real Hydra config and santacoder.training, and gpu_check
reports that there is no CUDA device, prints its table and exits 0."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from santacoder import GPTConfig
from santacoder.training.flops import measured_flops_per_batch

ROOT = Path(__file__).resolve().parents[1]


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PROJECT_ROOT": str(tmp_path),
        "PYTHONPATH": pythonpath,
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # the CPU path even on a GPU node
        **extra,
    }


def run(cmd: list[str], tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, cwd=tmp_path, env=env(tmp_path, **extra_env), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result


@pytest.mark.integration
def test_gpu_measure_trains_the_tiny_model_on_cpu(tmp_path):
    out = tmp_path / "m.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_measure.py"), "--preset", "tiny", "--device", "cpu"]
    cmd += ["--steps", "12", "--seq-len", "64", "--micro-batch", "4", "--num-workers", "0"]
    result = run([*cmd, "--data-dir", str(tmp_path / "data"), "--out", str(out)], tmp_path)
    r = json.loads(out.read_text())
    assert r == json.loads(result.stdout.strip().splitlines()[-1])  # the same result, last line of stdout
    assert r["status"] == "ok" and r["steps_done"] == 12 and r["precision"] == "32-true"
    # TFLOP/s of the device = its token rate x the model FLOPs per token (tiny, seq 64: forward + backward)
    config = GPTConfig.from_name("tiny", n_positions=64, vocab_size=8192)  # the rows of its 8192-token BPE
    flops_per_token = measured_flops_per_batch(config, 4, 64) / (4 * 64)
    assert r["tflops_per_sec"] == pytest.approx(r["device_tokens_per_sec"] * flops_per_token / 1e12, rel=1e-3)
    assert r["tokens_per_sec"] == pytest.approx(r["device_tokens_per_sec"])  # one device
    assert math.isfinite(r["loss"]) and math.isfinite(r["val_loss"])
    assert r["data_cached"] is False and "built now" in result.stdout
    assert (tmp_path / "m.run" / "metrics.json").is_file()  # the run's own output, next to the result


def test_gpu_check_without_cuda_stops_after_the_cpu_tests_and_prints_the_table(tmp_path):
    out = tmp_path / "out"
    result = run(
        ["bash", str(ROOT / "scripts" / "gpu_check"), "--skip-cpu-tests"],
        tmp_path,
        PYTHON=sys.executable,
        GPU_CHECK_OUT=str(out),
    )
    stdout = result.stdout
    assert "no CUDA device: torch.cuda.is_available() is False; stopping after the CPU tests" in stdout
    table = stdout[stdout.index("gpu_check summary") :]
    assert "CPU tests" in table and "skipped (--skip-cpu-tests)" in table
    for row in ("GPU tests", "measure 16-mixed/xformers", "measure bf16-mixed/sdpa"):
        line = next(line for line in table.splitlines() if line.startswith(row))
        assert "not run: no CUDA device" in line
    assert "total wall time" in table.splitlines()[-1]
    assert (out / "summary.txt").read_text().strip().endswith(table.strip().splitlines()[-1])
    assert json.loads((out / "versions.json").read_text())["cuda_available"] is False


@pytest.mark.parametrize(
    "args,message",
    [(["--steps", "1"], "--steps must be an integer >= 2"), (["--gpu"], "unknown argument '--gpu'")],
    ids=["steps", "unknown"],
)
def test_gpu_check_refuses_bad_arguments_before_any_work(args, message):
    cmd = ["bash", str(ROOT / "scripts" / "gpu_check"), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
