"""GPU paths: fp16 with dynamic loss scaling, xformers attention, bf16 backends, and FSDP. Skipped without CUDA;
the CPU tests cover the same logic (attention backends agree, loss scaling with a CPU GradScaler, the xformers
wrapper's layout with a stand-in kernel). `scripts/gpu_check` runs these on a GPU node."""

from pathlib import Path

import pytest
import torch

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder.model.attention import xformers_unsupported_reason
from santacoder.training.flops import peak_flops
from santacoder.training.task import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def small(corpus_dir, *extra: str) -> list[str]:
    return [
        *run_overrides.data(corpus_dir, seq_len=128, batch_size=8),
        "model.config.n_positions=128",
        "trainer.log_every_n_steps=1",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
        *extra,
    ]


def test_fp16_with_xformers_trains_and_counts_skipped_steps(compose_train, corpus_dir):
    probe = torch.empty(1, 1, 1, 32, device="cuda", dtype=torch.float16)
    if xformers_unsupported_reason(probe):
        pytest.skip(xformers_unsupported_reason(probe))
    cfg = compose_train(
        *small(corpus_dir),
        "trainer=gpu",
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        "model.attn_impl=xformers",
    )
    metrics = train(cfg)
    assert cfg.trainer.precision == "16-mixed"
    # GradScaler starts at 65536 and halves on every overflow (each one a skipped step); it would double only
    # after 2000 clean steps, so after 60 the scale tells exactly how many steps were skipped
    assert metrics["train/loss_scale"] == 65536.0 / 2 ** metrics["train/skipped_steps"]
    assert metrics["train/skipped_steps"] < 30  # most steps were applied
    assert metrics["val/loss"] < metrics["uniform_loss"] - 1.0
    # the GPU's fp16 peak is known (Lightning's table or the fallback): MFU = device FLOP/s over it
    peak, _ = peak_flops(torch.device("cuda", 0), torch.float16)
    assert metrics["train/mfu"] == pytest.approx(metrics["train/device/tflops_per_sec"] * 1e12 / peak, rel=1e-3)


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
def test_bf16_logits_of_backends_agree(multi_query):
    from santacoder import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", multi_query=multi_query), attn_impl="math").cuda().bfloat16().eval()
    ids = torch.randint(0, 4096, (2, 128), device="cuda")
    with torch.no_grad():
        ref = model(ids).float()
        impls = ["sdpa", "auto"] + ([] if xformers_unsupported_reason(ref.bfloat16()) else ["xformers"])
        for impl in impls:
            torch.testing.assert_close(model.set_attn_impl(impl)(ids).float(), ref, atol=0.1, rtol=0.05, msg=impl)


def test_fsdp_trains_one_step_and_its_checkpoint_loads_back(compose_train, corpus_dir, tmp_path):
    """Lightning's FSDP refuses a CPU, so this is where it proves itself: one step on one GPU, a full
    checkpoint gathered on rank 0, read by santacoder.load, and resumed by FSDP for one more step."""
    from santacoder import load

    common = ["trainer=fsdp", "trainer.devices=1", "trainer.val_check_interval=1", "trainer.limit_val_batches=1"]
    first = compose_train(*small(corpus_dir), *common, "trainer.max_steps=1")
    metrics = train(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert metrics["step"] == 1 and ckpt.is_file()
    model = load(ckpt, device="cuda")
    ids = torch.randint(0, 512, (1, 64), device="cuda")
    with torch.no_grad():
        assert torch.isfinite(model(ids)).all()

    second = compose_train(*small(corpus_dir), *common, "trainer.max_steps=2", f"ckpt_path={ckpt}")
    second.paths.output_dir = str(tmp_path / "resumed")
    assert train(second)["step"] == 2
