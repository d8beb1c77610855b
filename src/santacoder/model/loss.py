"""The language-model loss: the LM head's projection and cross-entropy, computed whole or chunk by chunk.

``full`` is the textbook path: logits ``[N, vocab]``, their fp32 copy, and ``F.cross_entropy``. Autograd keeps
the fp32 logits (or their log-softmax) for the backward pass and creates a gradient of the same size: at
santacoder-1b's micro batch of 2 x 2048 tokens and 49,280 rows that is 0.8 GB per copy, the largest
activation of the model.

``chunked`` never holds all logits. ``ChunkedLinearCrossEntropy`` projects ``chunk_size`` tokens at a time,
takes their loss, and computes their gradient at once (in the forward pass), so the backward pass only scales
two stored gradients: one the size of the hidden states, one the size of the LM head's weight. The gradients
are kept in fp32 until the backward pass multiplies them by the incoming gradient (the fp16 loss scale), so
an unscaled fp16 value can never underflow.

Both return the mean over labelled tokens; positions labelled ``ignore_index`` (``<fim-pad>``) take no part,
and a batch with no label at all has loss 0 and zero gradients (not ``F.cross_entropy``'s 0 / 0 = NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from santacoder.errors import ConfigError

LOSS_IMPLS = ("auto", "chunked", "full")
IGNORE_INDEX = -100  # the label value cross-entropy skips (the data module writes it for <fim-pad>)
FP16_MAX = 65504.0


def check_loss_impl(loss_impl: str, chunk_size: int) -> None:
    if loss_impl not in LOSS_IMPLS:
        raise ConfigError(f"model.loss_impl={loss_impl!r} is not one of {', '.join(LOSS_IMPLS)}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ConfigError(f"model.loss_chunk_size={chunk_size!r} must be a positive integer (tokens per chunk)")


def resolve_loss_impl(loss_impl: str) -> str:
    """``auto`` is ``chunked`` on every device: as fast as ``full`` and exact, with a fraction of its memory (see
    santacoder/bench/train_step.py and the README's benchmark table)."""
    return "chunked" if loss_impl == "auto" else loss_impl


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    impl: str = "chunked",
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``labels``: hidden (..., C), weight (V, C), labels (...).
    Under autocast the projection runs in the autocast dtype, as ``nn.Linear`` would; the loss is fp32."""
    hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, C)
    labels = labels.reshape(-1)  # (N,)
    if resolve_loss_impl(impl) == "full":
        logits = F.linear(hidden, weight)  # (N, V)
        total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
        return total / (labels != ignore_index).sum().clamp(min=1)
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return ChunkedLinearCrossEntropy.apply(hidden, weight, labels, chunk_size, ignore_index, needs_grad)


@torch.no_grad()
def token_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:  # fmt: skip
    """Each token's cross-entropy of ``hidden @ weight.T`` against ``labels`` (shape of labels, fp32, 0 where the
    label is ``ignore_index``), chunk by chunk as the chunked loss computes it: validation's loss per language.
    No gradient."""
    shape = labels.shape
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    out = torch.zeros(labels.shape, dtype=torch.float32, device=hidden.device)
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        w = weight.to(dtype)
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            valid = labels[rows] != ignore_index
            logits = (hidden[rows].to(dtype) @ w.T).float()
            target = torch.where(valid, labels[rows], 0)[:, None]
            loss = torch.logsumexp(logits, dim=-1) - logits.gather(1, target).squeeze(1)
            out[rows] = torch.where(valid, loss, 0.0)  # selected: an inf in an ignored row stays out
    return out.reshape(shape)


def grouped_loss_sums(
    token_losses: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and labelled-token count per group (``groups``: each token's group in [0, num_groups), the
    shape of ``labels``): ``val/loss/<language>`` is their ratio, summed over batches and ranks first."""
    valid = (labels != IGNORE_INDEX).reshape(-1)
    index = groups.reshape(-1)[valid].long()
    sums = torch.zeros(num_groups, dtype=torch.float64, device=token_losses.device)
    counts = torch.zeros(num_groups, dtype=torch.float64, device=token_losses.device)
    sums.index_add_(0, index, token_losses.reshape(-1)[valid].double())
    counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
    return sums, counts


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype nn.Linear would multiply in here: autocast's where it is on, else the tensor's own."""
    device = t.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return t.dtype


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Loss and gradients of ``cross_entropy(hidden @ weight.T, labels)`` chunk by chunk (see the module's doc).

    For each chunk of rows: logits in the compute dtype, upcast to fp32; the loss from their logsumexp; the
    gradient of the summed loss with respect to the logits, ``softmax - onehot`` (rows with no label zeroed),
    in place of the logits, divided by the number of labelled tokens; then its products with the weight (the
    hidden states' gradient) and with the chunk's hidden states (added to the weight's gradient), both kept in
    fp32.

    In fp16 the mean's division would push small gradients under fp16's smallest value, and the weight-gradient
    product could overflow (a sum over the chunk's rows of values up to ``|hidden|``), so the chunk's logit
    gradient is instead multiplied by a power of two that keeps that sum under fp16's maximum, and both
    factors are divided out in fp32 after: no overflow, and no more underflow than needed.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size: int, ignore_index: int, needs_grad: bool):
        dtype = _compute_dtype(hidden)
        device = hidden.device.type
        with torch.autocast(device, enabled=False):
            h = hidden.to(dtype)  # (N, C)
            w = weight.to(dtype)  # (V, C)
            valid = labels != ignore_index  # (N,)
            n_valid = valid.sum().clamp(min=1).float()
            loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
            # a frozen head (weight.requires_grad False) needs no weight gradient: not even its fp32 buffer
            need_w = needs_grad and ctx.needs_input_grad[1]
            if needs_grad:
                w_max = w.abs().amax().float() if dtype == torch.float16 else None
                grad_h = torch.empty(h.shape, dtype=torch.float32, device=hidden.device)
                grad_w = torch.zeros(w.shape if need_w else (0,), dtype=torch.float32, device=hidden.device)
            for start in range(0, h.shape[0], chunk_size):
                h_c = h[start : start + chunk_size]  # (n, C)
                valid_c = valid[start : start + chunk_size]
                target = torch.where(valid_c, labels[start : start + chunk_size], 0)[:, None]  # (n, 1)
                logits = (h_c @ w.T).float()  # (n, V) fp32
                # logsumexp by hand, in place, so the exponentials are computed once for the loss and the gradient
                logits -= logits.amax(dim=-1, keepdim=True)  # shifted: the largest is 0
                target_logit = logits.gather(1, target)  # (n, 1)
                grad = logits.exp_()  # (n, V): exp of the shifted logits, in place
                sum_exp = grad.sum(dim=-1, keepdim=True)  # (n, 1)
                # selected, not multiplied by the mask: an inf or NaN logit in an ignored row (an fp16 overflow in a
                # <fim-pad> row) must not reach the loss, as F.cross_entropy skips it
                loss += torch.where(valid_c, (sum_exp.log() - target_logit).squeeze(1), 0.0).sum()
                if not needs_grad:
                    continue
                # d(summed loss)/d(logits) = softmax - onehot, for labelled rows only, times a factor: bf16 and fp32
                # take the mean's 1/n here, so each product below is rounded once, as autograd's would be; fp16
                # takes a power of two that keeps its products finite, divided out in fp32 after
                factor = _fp16_safe_scale(h_c, valid_c, w_max) if dtype == torch.float16 else 1.0 / n_valid
                row_factor = valid_c[:, None] * factor  # (n, 1)
                grad.mul_(row_factor / sum_exp)
                grad.masked_fill_(~valid_c[:, None], 0.0)  # ignored rows: zero, whatever their logits held
                grad.scatter_add_(1, target, -row_factor.to(grad.dtype))
                grad_lp = grad.to(dtype)  # (n, V) in the compute dtype, for the two products
                rows = slice(start, start + chunk_size)
                if dtype == torch.float32:  # straight into the fp32 accumulators
                    torch.mm(grad_lp, w, out=grad_h[rows])  # (n, C)
                    if need_w:
                        grad_w.addmm_(grad_lp.T, h_c)  # (V, C)
                    continue
                grad_h[rows] = grad_lp @ w  # (n, C)
                if dtype == torch.float16:
                    grad_h[rows] /= factor * n_valid
                if not need_w:
                    continue
                grad_w_c = (grad_lp.T @ h_c).float()  # (V, C)
                if dtype == torch.float16:
                    grad_w_c /= factor * n_valid
                grad_w += grad_w_c
            if needs_grad:
                ctx.save_for_backward(grad_h, grad_w)
                ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_output):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        grad_output = grad_output.float()  # the fp16 loss scale arrives here, and meets fp32 gradients
        grad_hidden = (grad_h * grad_output).to(h_dtype) if ctx.needs_input_grad[0] else None
        grad_weight = (grad_w * grad_output).to(w_dtype) if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight, None, None, None, None


def _fp16_safe_scale(h_c: torch.Tensor, valid_c: torch.Tensor, w_max: torch.Tensor) -> torch.Tensor:
    """A power of two s that keeps every fp16 value of the chunk's gradient products finite: the entries of
    ``s * grad`` (each in [-s, s]), of ``(s * grad) @ w`` (at most ``2 s max|w|``: a row of ``grad`` sums to at
    most 2 in absolute value) and of ``(s * grad).T @ h_c`` (at most ``s * rows * max|h_c|`` over the labelled
    rows: the others' gradient is zero), with a factor 2 to spare. A tensor: no device sync."""
    h_max = torch.where(valid_c, h_c.abs().amax(dim=1).float(), 0.0).amax()
    bound = torch.stack([h_max * valid_c.sum(), 2 * w_max, torch.ones_like(w_max)]).amax()
    return torch.exp2(torch.floor(torch.log2(FP16_MAX / 2 / bound)))
