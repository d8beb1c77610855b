"""Attention forward + backward: time and peak memory against sequence length, per backend.

    python -m santacoder.bench.attention                  # santacoder-1b's heads, T = 256 .. 2048 (a minute on 2 cores)
    python -m santacoder.bench.attention --smoke          # seconds: the suite runs this

One layer's causal attention with santacoder-1b's heads (16 query heads of 128, one shared K/V head), batch 1,
through ``santacoder.model.attention.causal_attention``: every backend that runs here (xformers on a CUDA GPU, sdpa,
and the explicit ``math`` reference), in alternating rounds. Outputs and input gradients are checked against
``math`` first. Speed is relative to ``math``; peak memory is what torch allocates during one forward +
backward. ``measure`` is reused by the notebook that plots these curves.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import torch

from santacoder.bench.common import interleaved, machine, mib, peak_bytes, table
from santacoder.model.attention import causal_attention, xformers_unsupported_reason


def inputs(seq_len: int, n_head: int, n_kv_head: int, head_dim: int, device: str, dtype: torch.dtype):
    g = torch.Generator(device=device).manual_seed(seq_len)
    q = torch.randn(1, n_head, seq_len, head_dim, device=device, dtype=dtype, generator=g).requires_grad_()
    k = torch.randn(1, n_kv_head, seq_len, head_dim, device=device, dtype=dtype, generator=g).requires_grad_()
    v = torch.randn(1, n_kv_head, seq_len, head_dim, device=device, dtype=dtype, generator=g).requires_grad_()
    return q, k, v


def backends(device: str, dtype: torch.dtype, head_dim: int) -> list[str]:
    probe = torch.empty(1, 1, 1, head_dim, device=device, dtype=dtype)
    return (["xformers"] if xformers_unsupported_reason(probe) is None else []) + ["sdpa", "math"]


def forward_backward(impl: str, q, k, v) -> tuple[torch.Tensor, ...]:
    y = causal_attention(q, k, v, impl=impl)
    return (y.detach(), *torch.autograd.grad(y.float().square().sum(), (q, k, v)))


def measure(
    seq_lens: list[int],
    *,
    n_head: int = 16,
    n_kv_head: int = 1,
    head_dim: int = 128,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    rounds: int = 3,
) -> list[dict]:
    """One dict per (sequence length, backend): seconds (median), peak bytes, and the largest relative error
    of the output and the input gradients against ``math``."""
    results = []
    for seq_len in seq_lens:
        q, k, v = inputs(seq_len, n_head, n_kv_head, head_dim, device, dtype)
        impls = backends(device, dtype, head_dim)
        reference = [t.float() for t in forward_backward("math", q, k, v)]
        errors = {}
        for impl in impls:
            got = forward_backward(impl, q, k, v)
            errors[impl] = max(
                float((a.float() - b).abs().max() / b.abs().max()) for a, b in zip(got, reference, strict=True)
            )
        seconds = interleaved({impl: partial(forward_backward, impl, q, k, v) for impl in impls}, rounds=rounds)
        for impl in impls:
            peak = peak_bytes(partial(forward_backward, impl, q, k, v), device)
            results.append(
                {
                    "seq_len": seq_len,
                    "backend": impl,
                    "seconds": seconds[impl],
                    "peak_bytes": peak,
                    "max_rel_error": errors[impl],
                }  # fmt: skip
            )
    return results


def plot(results: list[dict], axes) -> None:
    """Time and peak memory against sequence length, one line per backend, on two matplotlib axes (the notebook
    and `make figures` draw this)."""
    for impl in sorted({r["backend"] for r in results}):
        rows = [r for r in results if r["backend"] == impl]
        axes[0].plot([r["seq_len"] for r in rows], [r["seconds"] * 1e3 for r in rows], "o-", label=impl)
        axes[1].plot([r["seq_len"] for r in rows], [r["peak_bytes"] / 2**20 for r in rows], "o-", label=impl)
    axes[0].set(xlabel="sequence length", ylabel="ms (forward + backward)", xscale="log", yscale="log")
    axes[1].set(xlabel="sequence length", ylabel="peak MiB allocated", xscale="log", yscale="log")
    lengths = sorted({r["seq_len"] for r in results})
    for ax in axes:
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.legend()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="T = 64 and 128, one round")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="default: float32 on CPU, bfloat16 on CUDA")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    seq_lens, rounds = ([64, 128], 1) if args.smoke else (args.seq_lens, args.rounds)
    results = measure(seq_lens, device=args.device, dtype=dtype, rounds=rounds)
    by_key = {(r["seq_len"], r["backend"]): r for r in results}
    rows = []
    for r in results:
        ref = by_key[(r["seq_len"], "math")]
        rows.append(
            [r["seq_len"], r["backend"], f"{r['seconds'] * 1e3:,.1f} ms", f"{ref['seconds'] / r['seconds']:.2f}x",
             mib(r["peak_bytes"]), f"{r['peak_bytes'] / ref['peak_bytes']:.2f}", f"{r['max_rel_error']:.1e}"]
        )  # fmt: skip
    print(
        f"attention forward + backward: {machine(args.device)}; {str(dtype).removeprefix('torch.')}, batch 1, "
        f"16 query heads of 128, 1 K/V head; median of {rounds}\n"
    )
    headers = ["T", "backend", "time", "speed vs math", "peak memory", "memory vs math", "error vs math"]
    print(table(headers, rows))
    bad = [r for r in results if r["max_rel_error"] > (1e-4 if dtype == torch.float32 else 2e-2)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
