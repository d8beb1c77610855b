"""FLOPs per batch and the peak FLOPs that MFU divides by."""

import pytest
import torch

from santacoder import GPTConfig
from santacoder.training.flops import analytic_flops_per_token, measured_flops_per_batch, peak_flops


# The README promises agreement within 0.05% for the 1.1B model at 2048 tokens (measured: 0.042%). The estimate
# is coarser for a tiny model (measured: 0.41%), where small terms weigh more.
@pytest.mark.parametrize("name,batch,seq_len,rel", [("tiny", 4, 256, 5e-3), ("santacoder-1b", 2, 2048, 5e-4)])
def test_measured_flops_agree_with_6n_plus_attention(name, batch, seq_len, rel):
    config = GPTConfig.from_name(name)
    measured = measured_flops_per_batch(config, batch, seq_len)  # on the meta device: no memory, no time
    analytic = analytic_flops_per_token(config, seq_len) * batch * seq_len
    assert measured == pytest.approx(analytic, rel=rel)


def test_santacoder_flops_per_token():
    # 6 x (1,124,886,528 - 2048 x 2048 position-table parameters) + 12 x 24 x 2048 x 2048 = 7,932,112,896
    assert analytic_flops_per_token(GPTConfig.from_name("santacoder-1b"), 2048) == 7_932_112_896


def test_peak_flops_fallback_for_chips_lightning_misses(monkeypatch):
    monkeypatch.setattr("santacoder.training.flops.get_available_flops", lambda device, dtype: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    peak, source = peak_flops(torch.device("cuda"), torch.bfloat16)
    assert peak == 989e12 and "fallback table for NVIDIA H200" in source
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert peak_flops(torch.device("cuda"), torch.bfloat16)[0] is None


def test_peak_flops_override_and_cpu():
    assert peak_flops(torch.device("cpu"), torch.float32, override=2e12)[0] == 2e12
    peak, source = peak_flops(torch.device("cpu"), torch.float32)
    assert peak is None and "peak_flops" in source
