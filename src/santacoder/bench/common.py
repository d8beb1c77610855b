"""What every benchmark here shares: interleaved timing with medians, peak memory from torch's own accounting,
the machine's description, and markdown tables.

A benchmark never reports an absolute time alone: each row is measured against a reference in the same
process, in alternating rounds (ours, reference, ours, ...), so a slow moment of a shared machine hits both.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

# the profiler's C++ side logs every start and stop to the console unless told otherwise
os.environ.setdefault("KINETO_LOG_LEVEL", "99")

import torch  # noqa: E402


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function over ``rounds`` alternating rounds, after ``warmup`` untimed ones."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_bytes(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak bytes allocated by torch while ``fn`` runs, above what was allocated before it. On CUDA from the
    caching allocator's statistics; on CPU from the profiler's memory events, whose "Total Allocated" counts the
    bytes torch's CPU allocator handed out since profiling started (not the process's RSS)."""
    if device == "cuda":
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        sync()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    if not totals:
        raise RuntimeError("the profiler recorded no memory events (torch built without memory profiling?)")
    return max(0, max(totals))


def machine(device: str = "cpu") -> str:
    """One line: the processor or GPU, the threads torch uses, torch's version."""
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"
