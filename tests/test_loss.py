"""The chunked linear cross-entropy against F.cross_entropy over full logits: value, gradients, ignored labels,
fp16 safety and the memory it saves (measured with saved_tensors_hooks)."""

import pytest
import torch
import torch.nn.functional as F

from santacoder import GPT, GPTConfig
from santacoder.model.loss import IGNORE_INDEX, linear_cross_entropy

N, C, V = 300, 32, 500  # 300 tokens: chunks of 64 leave a short last chunk
SANTACODER_V, SANTACODER_C = 49280, 128  # SantaCoder's vocabulary; a narrow hidden size keeps the CPU time low
ON_GPU_TOO = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
    ),
]


def inputs(dtype=torch.float32, hidden_scale=2.0, seed=0, device="cpu", vocab=V, width=C):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(N, width, generator=g) * hidden_scale).to(device, dtype).requires_grad_()
    weight = (torch.randn(vocab, width, generator=g) * 0.05).to(device, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (N,), generator=g).to(device)
    labels[::5] = IGNORE_INDEX  # <fim-pad> positions
    labels[64:128] = IGNORE_INDEX  # one whole chunk of 64 without a label
    return hidden, weight, labels


def loss_and_grads(hidden, weight, labels, *, impl, chunk_size=64, autocast=None, loss_scale=1.0):
    hidden.grad = weight.grad = None
    with torch.autocast(hidden.device.type, dtype=autocast, enabled=autocast is not None):
        loss = linear_cross_entropy(hidden, weight, labels, impl=impl, chunk_size=chunk_size)
    (loss * loss_scale).backward()
    return loss.detach().double(), hidden.grad.double() / loss_scale, weight.grad.double() / loss_scale


def truth(hidden, weight, labels):
    """F.cross_entropy in float64: what both implementations approximate."""
    h, w = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    loss = F.cross_entropy(h @ w.T, labels, ignore_index=IGNORE_INDEX)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("device", ON_GPU_TOO)
def test_fp32_value_and_gradients_equal_cross_entropy(device):
    hidden, weight, labels = inputs(device=device)
    reference = F.cross_entropy(hidden @ weight.T, labels, ignore_index=IGNORE_INDEX)
    ref_h, ref_w = torch.autograd.grad(reference, (hidden, weight))
    loss, grad_h, grad_w = loss_and_grads(hidden, weight, labels, impl="chunked")
    torch.testing.assert_close(loss.float(), reference.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_h.float(), ref_h, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(grad_w.float(), ref_w, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "dtype,autocast,loss_scale",
    [
        (torch.bfloat16, None, 1.0),
        (torch.float32, torch.bfloat16, 1.0),
        (torch.float32, torch.float16, 65536.0),
        (torch.float16, None, 65536.0),
    ],
    ids=["bf16-true", "bf16-mixed", "16-mixed", "16-true"],
)
@pytest.mark.parametrize("vocab,width", [(V, C), (SANTACODER_V, SANTACODER_C)], ids=["vocab500", "vocab49280"])
@pytest.mark.parametrize("device", ON_GPU_TOO)
def test_low_precision_is_as_close_to_the_truth_as_the_full_loss(dtype, autocast, loss_scale, vocab, width, device):
    """In bf16 and fp16 neither path is exact. The chunked one stays within two units of the format's precision
    of the float64 truth, and within twice the error of F.cross_entropy over full logits (which rounds each
    gradient product once; the chunked path rounds each chunk's weight-gradient product before summing them).
    16-mixed: fp32 weights, fp16 autocast, the loss scaled as GradScaler scales it. At SantaCoder's 49,280 rows a
    logit's gradient is ~1e-7 (softmax ~2e-5, over ~200 labelled tokens): fp16 keeps it only as a subnormal
    unless scaled (unscaled, the full path's hidden gradient is 2.4 eps off; the chunked path's is not)."""
    hidden, weight, labels = inputs(dtype, device=device, vocab=vocab, width=width)
    eps = torch.finfo(autocast or dtype).eps
    exact = truth(hidden, weight, labels)
    full = loss_and_grads(hidden, weight, labels, impl="full", autocast=autocast, loss_scale=loss_scale)
    chunked = loss_and_grads(hidden, weight, labels, impl="chunked", autocast=autocast, loss_scale=loss_scale)
    for name, e, f, c in zip(("loss", "hidden grad", "weight grad"), exact, full, chunked, strict=True):
        full_err, chunked_err = rel_err(f, e), rel_err(c, e)
        assert chunked_err <= 2 * full_err + 1e-6, f"{name}: chunked {chunked_err:.2e} vs full {full_err:.2e}"
        assert chunked_err < 2 * eps, f"{name}: {chunked_err:.2e}"


def test_chunk_sizes_give_the_same_result():
    hidden, weight, labels = inputs()
    results = [loss_and_grads(hidden, weight, labels, impl="chunked", chunk_size=cs) for cs in (1, 7, 64, 300, 4096)]
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", ["chunked", "full"])
def test_no_label_at_all_gives_zero_loss_and_gradients_not_nan(impl):
    hidden, weight, labels = inputs()
    labels[:] = IGNORE_INDEX
    loss, grad_h, grad_w = loss_and_grads(hidden, weight, labels, impl=impl)
    assert loss == 0 and not grad_h.any() and not grad_w.any()


def test_fp16_gradient_products_do_not_overflow():
    """Large positive hidden states (100 to 400) over a chunk of 1024 rows: the fp16 product grad.T @ hidden
    would reach ~2.5e5, past fp16's 65504, unless the chunk's gradient is scaled down first (and back up in
    fp32)."""
    g = torch.Generator().manual_seed(1)
    hidden = (torch.rand(1024, 16, generator=g) * 300 + 100).requires_grad_()
    weight = (torch.randn(64, 16, generator=g) * 0.01).requires_grad_()
    labels = torch.zeros(1024, dtype=torch.long)  # every row pulls the same weight row: the sums add up
    _, grad_h, grad_w = loss_and_grads(hidden, weight, labels, impl="chunked", chunk_size=1024, autocast=torch.float16)
    assert torch.isfinite(grad_w).all() and torch.isfinite(grad_h).all()
    exact = truth(hidden, weight, labels)
    assert rel_err(grad_w, exact[2]) < 1e-2


def test_gradients_are_kept_in_fp32_until_the_loss_scale_meets_them():
    """A pure-fp16 head (16-true weights): the hidden states' gradients (~1e-8 here, under fp16's smallest
    subnormal 6e-8) survive because they stay fp32 until the backward pass multiplies them by the loss scale."""
    g = torch.Generator().manual_seed(2)
    n = 4096
    hidden = torch.randn(n, 16, generator=g).half().requires_grad_()
    weight = (torch.randn(32, 16, generator=g) * 5e-5).half().requires_grad_()
    labels = torch.randint(0, 32, (n,), generator=g)
    loss = linear_cross_entropy(hidden, weight, labels, impl="chunked", chunk_size=512)
    (loss * 65536).backward()
    grad_h = hidden.grad.double() / 65536
    exact = truth(hidden, weight, labels)[1]
    assert exact.abs().max() < 6e-8  # the point of the test: unscaled, these are below fp16's smallest value
    assert (grad_h != 0).float().mean() > 0.99
    assert rel_err(grad_h, exact) < 1e-2


@pytest.mark.parametrize("impl", ["chunked", "full"])
def test_the_model_computes_the_loss_of_its_own_logits(impl):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny", n_layer=2), loss_impl=impl, loss_chunk_size=100)
    ids = torch.randint(0, 4096, (3, 90))
    labels = torch.randint(0, 4096, (3, 90))
    labels[1, 10:] = IGNORE_INDEX
    reference = F.cross_entropy(model(ids).flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    ref_grads = torch.autograd.grad(reference, list(model.parameters()))
    loss = model(ids, labels=labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=0)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def saved_bytes(loss_fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``loss_fn()`` (each storage counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    return sum(storages.values())


def test_the_chunked_loss_keeps_two_gradients_instead_of_the_logits():
    """The tiny model at its training shape (8 x 256 tokens, vocab 4096): the full loss keeps the [2048, 4096]
    fp32 log-softmax (32 MiB) for its backward pass; the chunked one keeps the gradients of the hidden states
    and of the LM head's weight (1 + 2 MiB), whatever the number of tokens."""
    torch.manual_seed(0)
    config = GPTConfig.from_name("tiny")
    model = GPT(config, loss_impl="full")
    ids = torch.randint(0, config.vocab_size, (8, 256))
    labels = torch.randint(0, config.vocab_size, (8, 256))
    n_tokens, width, vocab = ids.numel(), config.n_embd, config.vocab_size
    logits_bytes = n_tokens * vocab * 4

    hidden = torch.randn(n_tokens, width, requires_grad=True)
    weight = model.lm_head.weight
    head = {
        impl: saved_bytes(lambda impl=impl: linear_cross_entropy(hidden, weight, labels, impl=impl))
        for impl in ("full", "chunked")
    }
    assert head["full"] >= logits_bytes
    assert head["chunked"] == (n_tokens * width + vocab * width) * 4

    whole = {}
    for impl in ("full", "chunked"):
        model.loss_impl = impl
        whole[impl] = saved_bytes(lambda: model(ids, labels=labels))
    assert whole["full"] - whole["chunked"] >= head["full"] - head["chunked"] - n_tokens * width * 4, whole


def test_an_overflowing_logit_in_an_ignored_row_does_not_reach_the_loss_or_gradients():
    """An fp16 overflow in a <fim-pad> row (its logits inf, its hidden state finite): the chunked loss selects the
    labelled rows (masking by multiplication made it 0 * inf = NaN). The full path's loss skips the row too, but
    its log-softmax backward does not: its gradients hold NaN there (measured: the reason to prefer chunked)."""
    impl = "chunked"
    hidden, weight, labels = inputs(dtype=torch.float16)
    with torch.no_grad():
        hidden[5] = 60000.0  # 32 x 60000 x |w|: past fp16's 65504 for most vocabulary rows
        weight.abs_()
    assert labels[5] == IGNORE_INDEX
    assert not torch.isfinite(hidden[5:6].detach() @ weight.detach().T).all()  # the overflow is real
    loss, grad_h, grad_w = loss_and_grads(hidden, weight, labels, impl=impl)
    assert torch.isfinite(loss) and torch.isfinite(grad_h).all() and torch.isfinite(grad_w).all()
    exact = truth(hidden, weight, labels)
    assert abs(float(loss - exact[0])) < 1e-2 and not grad_h[5].any()
    assert rel_err(grad_w, exact[2]) < 2e-2


def test_a_frozen_head_gets_no_weight_gradient_and_no_buffer_for_one():
    hidden, weight, labels = inputs()
    weight.requires_grad_(False)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        loss = linear_cross_entropy(hidden, weight, labels, impl="chunked", chunk_size=64)
    loss.backward()
    assert weight.grad is None and hidden.grad is not None
    assert sum(saved) == N * C  # the hidden states' gradient only: no (V, C) buffer for a weight that learns nothing
    exact = truth(hidden, weight, labels)[1]
    assert rel_err(hidden.grad.double(), exact) < 1e-5
