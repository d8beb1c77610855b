"""Causal attention backends behind one function.

Every backend takes queries with ``nh`` heads and keys/values with ``n_kv`` heads, where ``n_kv`` is 1
(multi-query attention, one K/V head shared by all query heads) or ``nh`` (ordinary multi-head):

    q: (B, nh, Tq, hs)    k, v: (B, n_kv, Tk, hs)    ->    y: (B, nh, Tq, hs)

``Tq`` may be smaller than ``Tk`` (decoding with a KV cache): query ``i`` then sits at absolute position
``Tk - Tq + i`` and sees keys ``0 .. Tk - Tq + i`` (bottom-right aligned causal mask).

``mask`` (optional, boolean, broadcastable to ``(B, nh, Tq, Tk)``, True = may attend) replaces the causal mask
when rows differ, e.g. a left-padded batch of prompts whose padding no query may see (``padded_causal_mask``).

Backends:
- ``math``: the explicit reference (repeated K/V, fp32 softmax); used by tests as ground truth.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with ``enable_gqa`` so kernels that
  support grouped heads never materialise the repeated K/V.
- ``xformers``: ``xformers.ops.memory_efficient_attention`` with K/V expanded by a stride-0 view (no copy);
  CUDA only.
- ``auto``: xformers when the inputs are on CUDA and xformers can run them, else sdpa.

Which backend runs is a runtime choice (``GPT(config, attn_impl=...)``, Hydra's ``model.attn_impl``), never
saved with a model: a model trained with xformers on a GPU runs with sdpa on a laptop.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings

import torch
import torch.nn.functional as F

from santacoder.errors import ConfigError

log = logging.getLogger(__name__)

ATTN_IMPLS = ("auto", "xformers", "sdpa", "math")


def check_attn_impl(impl: str) -> str:
    """``impl`` if it names a backend, else a ConfigError listing them."""
    if impl not in ATTN_IMPLS:
        raise ConfigError(f"attn_impl={impl!r} must be one of {ATTN_IMPLS}")
    return impl


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    impl: str = "auto",
    dropout_p: float = 0.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal self-attention with the backend named by ``impl`` (see the module docstring)."""
    if impl == "auto":
        return _auto(q, k, v, dropout_p, mask)
    if impl == "sdpa":
        return _sdpa(q, k, v, dropout_p, mask)
    if impl == "math":
        return _math(q, k, v, dropout_p, mask)
    if impl == "xformers":
        reason = xformers_unsupported_reason(q)
        if reason is not None:
            raise RuntimeError(
                f"attn_impl='xformers' cannot run here: {reason}. Use attn_impl='auto' or 'sdpa' instead."
            )
        return _xformers(q, k, v, dropout_p, mask)
    raise ValueError(f"unknown attention backend {impl!r}; expected one of {ATTN_IMPLS}")


@torch.compiler.assume_constant_result  # for torch.compile, a constant: it depends only on the machine
def _auto_choice(device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    return auto_backend(device, dtype, head_dim)


Mask = torch.Tensor | None


def _auto(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, mask: Mask = None) -> torch.Tensor:
    if _auto_choice(q.device, q.dtype, q.shape[-1]) == "xformers":
        try:
            return _xformers(q, k, v, dropout_p, mask)
        except NotImplementedError as e:  # xformers imports but has no kernel for these particular inputs
            _warn_once(f"xformers has no kernel for these inputs ({e}); attn_impl='auto' uses sdpa for them")
    return _sdpa(q, k, v, dropout_p, mask)


def _math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, mask: Mask = None) -> torch.Tensor:
    nh, tq, hs = q.shape[1], q.shape[2], q.shape[3]
    tk = k.shape[2]
    k = k.expand(-1, nh, -1, -1)  # (B, nh, Tk, hs): MQA shares the single K/V head
    v = v.expand(-1, nh, -1, -1)
    scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(hs)  # (B, nh, Tq, Tk)
    allowed = causal_mask(tq, tk, q.device) if mask is None else mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = F.softmax(scores, dim=-1).to(q.dtype)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v  # (B, nh, Tq, hs)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, mask: Mask = None) -> torch.Tensor:
    tq, tk = q.shape[2], k.shape[2]
    gqa = k.shape[1] != q.shape[1]
    if mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa)
    if tq == tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, enable_gqa=gqa)
    if tq == 1:  # one decoding step: the last position sees every key, so no mask at all
        if k.shape[1] == 1:  # MQA: the heads' queries as rows of one head, over the one shared K/V head
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, dropout_p=dropout_p)  # (B, 1, nh, hs)
            return y.transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, enable_gqa=gqa)
    # is_causal aligns the mask top-left, which is wrong for a cached prefix: pass it explicitly.
    mask = causal_mask(tq, tk, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=gqa)


def _xformers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, mask: Mask = None) -> torch.Tensor:
    from xformers.ops import fmha

    b, nh, tq, hs = q.shape
    tk = k.shape[2]
    # xformers wants (B, T, H, hs). Expanding K/V over heads is a stride-0 view: no copy is made, and the
    # flash forward kernel recognises it as multi-query.
    q_ = q.transpose(1, 2)  # (B, Tq, nh, hs)
    k_ = k.transpose(1, 2).expand(b, tk, nh, hs)  # (B, Tk, nh, hs)
    v_ = v.transpose(1, 2).expand(b, tk, nh, hs)
    if mask is not None:
        bias = _additive_bias(mask, b, nh, tq, tk, q.dtype)
    elif tq == tk:
        bias = fmha.attn_bias.LowerTriangularMask()
    else:
        bias = fmha.attn_bias.LowerTriangularFromBottomRightMask()
    y = fmha.memory_efficient_attention(q_, k_, v_, attn_bias=bias, p=dropout_p)
    return y.transpose(1, 2)  # (B, nh, Tq, hs)


def _additive_bias(mask: torch.Tensor, b: int, nh: int, tq: int, tk: int, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as the additive bias xformers takes: (B, nh, Tq, Tk), 0 or -inf, its last dimension
    padded in memory to a multiple of 8 (xformers' alignment rule) and sliced back."""
    padded = torch.zeros(b, nh, tq, -(-tk // 8) * 8, dtype=dtype, device=mask.device)
    bias = padded[..., :tk]
    bias.masked_fill_(~mask.expand(b, nh, tq, tk), float("-inf"))
    return bias


def causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """Boolean (Tq, Tk) mask, True where attention is allowed; bottom-right aligned."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)


def padded_causal_mask(key_mask: torch.Tensor, tq: int) -> torch.Tensor:
    """(B, 1, Tq, Tk) boolean mask for the last ``tq`` queries over keys where ``key_mask`` (B, Tk) is 1: causal,
    padding hidden. A query at a padding position sees itself, so that no row is all -inf (its output is never
    used, and a NaN there would reach later layers through its key and value)."""
    tk = key_mask.shape[1]
    causal = causal_mask(tq, tk, key_mask.device)  # (Tq, Tk)
    own = torch.eye(tk, dtype=torch.bool, device=key_mask.device)[tk - tq :]  # query i is key tk - tq + i
    return (causal & key_mask.bool()[:, None, None, :]) | own


def xformers_unsupported_reason(q: torch.Tensor) -> str | None:
    """Why xformers cannot run attention on tensors like ``q``, or None when it can."""
    return _xformers_unsupported(q.device, q.dtype, q.shape[-1])


def _xformers_unsupported(device: torch.device, dtype: torch.dtype, head_dim: int) -> str | None:
    if device.type != "cuda":
        return f"xformers kernels are CUDA-only and the inputs are on {device.type}"
    if not _xformers_importable():
        return "the xformers package (with its CUDA kernels) is not importable"
    if head_dim > 256:
        return f"head size {head_dim} is larger than xformers' limit of 256"
    if dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) < (8, 0):
        return "bf16 needs a GPU of compute capability 8.0 or newer"
    return None


@functools.cache
def _xformers_importable() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # xformers warns at import on builds without matching kernels
            from xformers.ops import fmha  # noqa: F401
    except Exception:  # any failure (missing package, ABI mismatch) means "not usable"
        return False
    return True


# functools.cache below is the only state: a pure function of the machine (installed packages, GPU), so
# the choice is made and logged once per device, dtype and head size rather than in every layer's forward.
@functools.cache
def auto_backend(device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    """The backend ``attn_impl="auto"`` uses for inputs on ``device`` in ``dtype`` with heads of ``head_dim``:
    xformers where it can run them, else sdpa."""
    reason = _xformers_unsupported(device, dtype, head_dim)
    choice = "sdpa" if reason is not None else "xformers"
    log.info("attn_impl='auto' uses %s on %s/%s%s", choice, device, dtype, f" ({reason})" if reason else "")
    return choice


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)
