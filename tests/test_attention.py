import pytest
import torch

from santacoder.model.attention import auto_backend, causal_attention, xformers_unsupported_reason

BACKENDS = ("math", "sdpa")


def _qkv(n_kv: int, tq: int = 7, tk: int = 7, nh: int = 4, hs: int = 16, b: int = 2, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, nh, tq, hs, generator=g).to(device, dtype)
    k = torch.randn(b, n_kv, tk, hs, generator=g).to(device, dtype)
    v = torch.randn(b, n_kv, tk, hs, generator=g).to(device, dtype)
    return q, k, v


def _naive(q, k, v):
    """Attention written out position by position: the definition, independent of any backend."""
    b, nh, tq, hs = q.shape
    tk = k.shape[2]
    out = torch.zeros_like(q)
    for h in range(nh):
        kh, vh = k[:, h % k.shape[1]], v[:, h % k.shape[1]]
        for i in range(tq):
            visible = tk - tq + i + 1
            w = torch.softmax(q[:, h, i : i + 1] @ kh[:, :visible].transpose(-1, -2) / hs**0.5, dim=-1)
            out[:, h, i] = (w @ vh[:, :visible]).squeeze(1)
    return out


@pytest.mark.parametrize("n_kv", [1, 4], ids=["mqa", "mha"])
@pytest.mark.parametrize("tq,tk", [(7, 7), (1, 9), (3, 9)], ids=["full", "decode1", "decode3"])
@pytest.mark.parametrize("impl", BACKENDS)
def test_backends_match_definition(impl, n_kv, tq, tk):
    q, k, v = _qkv(n_kv, tq, tk)
    torch.testing.assert_close(causal_attention(q, k, v, impl=impl), _naive(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv", [1, 4], ids=["mqa", "mha"])
def test_auto_uses_sdpa_on_cpu(n_kv):
    q, k, v = _qkv(n_kv)
    torch.testing.assert_close(causal_attention(q, k, v, impl="auto"), causal_attention(q, k, v, impl="sdpa"))


def test_mqa_equals_mha_with_repeated_kv():
    q, k, v = _qkv(1)
    mqa = causal_attention(q, k, v, impl="sdpa")
    mha = causal_attention(q, k.expand(-1, 4, -1, -1).contiguous(), v.expand(-1, 4, -1, -1).contiguous(), impl="sdpa")
    torch.testing.assert_close(mqa, mha, atol=1e-6, rtol=1e-6)


def test_xformers_on_cpu_is_a_clear_error():
    q, k, v = _qkv(1)
    assert "CUDA-only" in xformers_unsupported_reason(q)
    with pytest.raises(RuntimeError, match="attn_impl='xformers' cannot run here: xformers kernels are CUDA-only"):
        causal_attention(q, k, v, impl="xformers")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        causal_attention(*_qkv(1), impl="flash")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers kernels need a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n_kv", [1, 16], ids=["mqa", "mha"])
@pytest.mark.parametrize("tq,tk", [(128, 128), (1, 130)], ids=["full", "decode"])
def test_xformers_matches_math_on_gpu(dtype, n_kv, tq, tk):
    if xformers_unsupported_reason(torch.empty(1, device="cuda", dtype=dtype)) is not None:
        pytest.skip(xformers_unsupported_reason(torch.empty(1, device="cuda", dtype=dtype)))
    q, k, v = _qkv(n_kv, tq, tk, nh=16, hs=128, device="cuda", dtype=dtype)
    ref = causal_attention(q.float(), k.float(), v.float(), impl="math")
    for impl in ("xformers", "sdpa", "auto"):
        torch.testing.assert_close(causal_attention(q, k, v, impl=impl).float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers kernels need a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n_kv", [1, 16], ids=["mqa", "mha"])
@pytest.mark.parametrize("tq,tk", [(256, 256), (64, 192)], ids=["full", "cached-prefix"])
def test_xformers_forward_and_backward_match_math_on_gpu(dtype, n_kv, tq, tk):
    """Training's path: outputs and the gradients of q, k and v (k and v shared by all heads under MQA, so
    their gradients sum over heads) against the fp32 reference; with a cached prefix, queries sit at the end."""
    if xformers_unsupported_reason(torch.empty(1, device="cuda", dtype=dtype)) is not None:
        pytest.skip(xformers_unsupported_reason(torch.empty(1, device="cuda", dtype=dtype)))
    q, k, v = (t.requires_grad_() for t in _qkv(n_kv, tq, tk, nh=16, hs=128, device="cuda", dtype=dtype))
    g = torch.randn(q.shape, generator=torch.Generator(device="cuda").manual_seed(1), device="cuda", dtype=dtype)

    def forward_backward(impl, *inputs):
        y = causal_attention(*inputs, impl=impl)
        return (y, *torch.autograd.grad(y, inputs, g.to(y.dtype)))

    reference = forward_backward("math", *(t.detach().float().requires_grad_() for t in (q, k, v)))
    for name, got, want in zip(("y", "dq", "dk", "dv"), forward_backward("xformers", q, k, v), reference, strict=True):
        scale = want.abs().max()
        torch.testing.assert_close(got.float() / scale, want / scale, atol=2e-2, rtol=0, msg=name)


@pytest.mark.parametrize("tq,tk", [(7, 7), (2, 9)], ids=["full", "decode"])
def test_xformers_wrapper_layout_on_cpu(monkeypatch, tq, tk):
    """The xformers call itself needs CUDA; its wrapper's layout work (BMHK transposes, stride-0 K/V expansion,
    the causal bias for cached prefixes) is checked here against a stand-in kernel written from the definition."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from xformers.ops import fmha

    def stand_in(q, k, v, attn_bias=None, p=0.0):
        assert q.shape[2] == k.shape[2] == 4 and k.stride(2) == 0 and v.stride(2) == 0  # no K/V copy
        expected = fmha.attn_bias.LowerTriangularMask if tq == tk else fmha.attn_bias.LowerTriangularFromBottomRightMask
        assert type(attn_bias) is expected
        # (B, M, H, K) -> (B, H, M, K) for the definition
        return _naive(q.transpose(1, 2), k.transpose(1, 2)[:, :1], v.transpose(1, 2)[:, :1]).transpose(1, 2)

    monkeypatch.setattr(fmha, "memory_efficient_attention", stand_in)
    monkeypatch.setattr("santacoder.model.attention.xformers_unsupported_reason", lambda q: None)
    q, k, v = _qkv(1, tq, tk)
    torch.testing.assert_close(causal_attention(q, k, v, impl="xformers"), _naive(q, k, v), atol=1e-5, rtol=1e-5)


def test_auto_falls_back_to_sdpa_when_xformers_has_no_kernel(monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from xformers.ops import fmha

    calls = []

    def no_kernel(*args, **kwargs):
        calls.append(1)
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    monkeypatch.setattr(fmha, "memory_efficient_attention", no_kernel)
    monkeypatch.setattr("santacoder.model.attention._xformers_unsupported", lambda device, dtype, head_dim: None)
    auto_backend.cache_clear()  # decided again with xformers "available" on this CPU
    try:
        q, k, v = _qkv(1)
        assert auto_backend(q.device, q.dtype, q.shape[-1]) == "xformers"
        for _ in range(2):
            out = causal_attention(q, k, v, impl="auto")
            torch.testing.assert_close(out, _naive(q, k, v), atol=1e-5, rtol=1e-5)
        assert len(calls) == 2  # each call asks xformers, which refuses, and sdpa answers
    finally:
        auto_backend.cache_clear()


def _padded(n_kv: int, pads: list[int], t: int = 9):
    from santacoder.model.attention import padded_causal_mask

    q, k, v = _qkv(n_kv, t, t, b=len(pads))
    key_mask = torch.ones(len(pads), t, dtype=torch.long)
    for row, pad in enumerate(pads):
        key_mask[row, :pad] = 0
    return q, k, v, padded_causal_mask(key_mask, t)


def _each_row_alone(q, k, v, pads):
    """Every row's tokens through the definition without its padding (the rows' padded queries left out)."""
    return [_naive(q[r : r + 1, :, p:], k[r : r + 1, :, p:], v[r : r + 1, :, p:]) for r, p in enumerate(pads)]


@pytest.mark.parametrize("n_kv", [1, 4], ids=["mqa", "mha"])
@pytest.mark.parametrize("impl", BACKENDS)
def test_a_padding_mask_makes_each_row_what_it_is_alone(impl, n_kv):
    pads = [0, 3, 8]  # the last row has one token
    q, k, v, mask = _padded(n_kv, pads)
    out = causal_attention(q, k, v, impl=impl, mask=mask)
    assert torch.isfinite(out).all()  # padded queries see themselves: no all -inf row, no NaN
    for r, (p, alone) in enumerate(zip(pads, _each_row_alone(q, k, v, pads), strict=True)):
        torch.testing.assert_close(out[r : r + 1, :, p:], alone, atol=1e-5, rtol=1e-5)


def test_xformers_wrapper_passes_the_padding_mask_as_an_aligned_bias_on_cpu(monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from xformers.ops import fmha

    def stand_in(q, k, v, attn_bias=None, p=0.0):  # (B, M, H, K) inputs, a (B, H, M, N) additive bias
        assert attn_bias.stride(-2) % 8 == 0  # xformers' alignment rule for bias tensors
        scores = q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) / q.shape[-1] ** 0.5 + attn_bias
        return (scores.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2)

    monkeypatch.setattr(fmha, "memory_efficient_attention", stand_in)
    monkeypatch.setattr("santacoder.model.attention.xformers_unsupported_reason", lambda q: None)
    pads = [0, 3, 8]
    q, k, v, mask = _padded(1, pads)
    out = causal_attention(q, k, v, impl="xformers", mask=mask)
    for r, (p, alone) in enumerate(zip(pads, _each_row_alone(q, k, v, pads), strict=True)):
        torch.testing.assert_close(out[r : r + 1, :, p:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="xformers kernels need a CUDA GPU")
def test_xformers_padding_mask_matches_math_on_gpu():
    if xformers_unsupported_reason(torch.empty(1, device="cuda", dtype=torch.float16)) is not None:
        pytest.skip(xformers_unsupported_reason(torch.empty(1, device="cuda", dtype=torch.float16)))
    q, k, v, mask = _padded(1, [0, 3, 8])
    q, k, v, mask = (t.cuda() for t in (q, k, v, mask))
    ref = causal_attention(q, k, v, impl="math", mask=mask)
    out = causal_attention(q.half(), k.half(), v.half(), impl="xformers", mask=mask).float()
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
