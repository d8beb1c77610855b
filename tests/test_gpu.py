"""GPU paths: fp16 with dynamic loss scaling and xformers attention. Skipped without CUDA; the CPU tests cover
the same logic (attention backends agree, loss scaling with a CPU GradScaler)."""

import pytest
import torch

from santacoder.attention import xformers_unsupported_reason
from santacoder.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_fp16_with_xformers_trains_the_tiny_model_and_logs_the_loss_scale(compose_train, corpus_dir):
    probe = torch.empty(1, 1, 1, 64, device="cuda", dtype=torch.float16)
    if xformers_unsupported_reason(probe):
        pytest.skip(xformers_unsupported_reason(probe))
    cfg = compose_train(
        f"data.source={corpus_dir}",
        "data.vocab_size=512",
        "data.num_workers=0",
        "data.val_fraction=0.1",
        "trainer=gpu",
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        "trainer.log_every_n_steps=1",
        "model.config.attn_impl=xformers",
        "extras.print_config=false",
    )
    metrics = train(cfg)
    assert cfg.trainer.precision == "16-mixed"
    assert 1.0 <= metrics["train/loss_scale"] <= 65536.0
    assert metrics["val/loss"] < metrics["uniform_loss"] - 1.0
    assert metrics["train/mfu"] > 0  # the GPU's peak is known (Lightning's table or the fallback)


def test_bf16_logits_of_backends_agree():
    from santacoder import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", attn_impl="math")).cuda().to(torch.bfloat16).eval()
    ids = torch.randint(0, 4096, (2, 128), device="cuda")
    ref = model(ids).float()
    for impl in ("sdpa", "auto"):
        for block in model.transformer.h:
            block.attn.attn_impl = impl
        torch.testing.assert_close(model(ids).float(), ref, atol=0.1, rtol=0.05)
