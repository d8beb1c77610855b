"""How long training stalls per checkpoint save: our AtomicCheckpointIO in the training thread against Lightning's
AsyncCheckpointIO around it, for a model preset's full training state.

    python -m santacoder.bench.checkpoint_stall                     # santacoder-1b, float32: minutes, 13.5 GB files
    python -m santacoder.bench.checkpoint_stall --dtype bfloat16    # bf16-true training's state, half the bytes
    python -m santacoder.bench.checkpoint_stall --smoke             # the tiny model, seconds: the suite runs this

Not part of `make bench`: the 1.1B preset writes files of 7 to 13.5 GB and takes minutes on a small machine.

The state is what Lightning hands the plugin: the GPT's weights (the tied LM head under both of its names, as
the LightningModule's state_dict has it) and AdamW's ``exp_avg``/``exp_avg_sq`` after one step, in the keys of
a Lightning checkpoint. The step is AdamW's own, but on a random gradient per parameter instead of a backward
pass (one parameter at a time, so a single gradient exists at once: a backward pass would hold all of them).

- synchronous: ``AtomicCheckpointIO.save_checkpoint`` checksums the state (SHA-256 of every byte), streams
  ``torch.save`` into a temporary file, fsyncs and renames it, all in the caller's thread: the stall is the call.
- asynchronous: ``AsyncCheckpointIO(AtomicCheckpointIO())`` clones every tensor in the caller's thread, then
  does the above in a background thread: the stall is the time the call takes to return, "until on disk" the
  time until ``teardown()`` (which waits for the thread) returns, and the clone is extra memory until then.
  Tensors are cloned one by one, so the tied embedding is cloned, and then written, twice.

A mode whose memory (the state; the state and its clone) or disk space would not fit is skipped with a row
saying so. With ``--repeats`` the two modes alternate and the table gives medians, and each save is listed: the
first save of a run has been up to twice as slow as the later ones on a small VM (page cache, disk), so a single
save per mode (the default, for time) flatters the asynchronous ratio.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning
import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from santacoder.bench.common import machine, table
from santacoder.checkpoints.format import MODEL_PREFIX, content_checksum
from santacoder.config import PRESETS, GPTConfig
from santacoder.model.gpt import GPT
from santacoder.training.checkpoint_io import AtomicCheckpointIO

GiB = 2**30
SYNC, ASYNC = "synchronous (AtomicCheckpointIO)", "asynchronous (AsyncCheckpointIO)"
# what the process needs beyond the state: Python, torch, a parameter's gradient while the state is built
HEADROOM = 1 * GiB


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GiB:.3g}"


def state_sizes(config: GPTConfig, dtype: torch.dtype) -> tuple[int, int]:
    """Bytes of the training state (weights and two moments, each storage once) and of what AsyncCheckpointIO
    clones (every tensor of the checkpoint dict, the tied head twice), from a model on the meta device: known
    before any memory is spent."""
    with torch.device("meta"):
        model = GPT(config).to(dtype)
    weights = sum(p.nbytes for p in model.parameters())  # parameters() yields the tied weight once
    in_state_dict = sum(t.nbytes for t in model.state_dict().values())
    return 3 * weights, in_state_dict + 2 * weights


def build(config: GPTConfig, dtype: torch.dtype) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT(config).to(dtype)
    # AdamW keeps its moments in the parameters' dtype: bf16-true training's are bf16
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    for p in model.parameters():  # a parameter without a gradient is skipped by step(): one at a time
        p.grad = torch.randn_like(p).mul_(1e-3)
        optimizer.step()
        p.grad = None
    return model, optimizer


def checkpoint(model: GPT, optimizer: torch.optim.Optimizer) -> dict:
    """A new dict in Lightning's keys around the same tensors (the plugin adds its own fields to the dict it is
    given: each save gets a fresh one, as each of Lightning's does)."""
    return {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": {MODEL_PREFIX + name: t for name, t in model.state_dict().items()},
        "loops": {},
        "callbacks": {},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hyper_parameters": {"config": model.config.to_dict()},
    }


def tensor_bytes(obj) -> int:
    """Bytes of every tensor in a nested checkpoint dict, each occurrence counted: what a clone of all of them needs."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def mem_available() -> int:
    """The kernel's estimate of memory available without swapping (page cache included), in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def skip_reason(memory: int, memory_available: int, disk: int, disk_free: int) -> str | None:
    if memory + HEADROOM > memory_available:
        return f"skipped: needs {(memory + HEADROOM) / GiB:.1f} GiB, {memory_available / GiB:.1f} GiB available"
    if disk > disk_free:
        return f"skipped: needs {disk / GiB:.1f} GiB of disk, {disk_free / GiB:.1f} GiB free"
    return None


def save_sync(ckpt: dict, path: Path) -> tuple[float, float]:
    start = time.perf_counter()
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    stall = time.perf_counter() - start
    return stall, stall


def save_async(ckpt: dict, path: Path) -> tuple[float, float]:
    plugin = AsyncCheckpointIO(AtomicCheckpointIO())
    start = time.perf_counter()
    plugin.save_checkpoint(ckpt, path)
    stall = time.perf_counter() - start
    plugin.teardown()  # waits for the background write (and raises its error, if any)
    return stall, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="santacoder-1b")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights' and moments'")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the files are written")
    parser.add_argument("--repeats", type=int, default=1, help="saves per mode, alternating; the table gives medians")
    parser.add_argument("--smoke", action="store_true", help="the tiny preset: seconds")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    command = shlex.join(
        ["python", "-m", "santacoder.bench.checkpoint_stall", *(sys.argv[1:] if argv is None else argv)]
    )
    preset = "tiny" if args.smoke else args.preset
    config, dtype = GPTConfig.from_name(preset), getattr(torch, args.dtype)
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="checkpoint-stall-", dir=args.dir))  # removed at the end, whatever happens
    try:
        return run(args, command, preset, config, dtype, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, command: str, preset: str, config: GPTConfig, dtype: torch.dtype, work: Path) -> int:
    state, clone = state_sizes(config, dtype)
    available, disk_free = mem_available(), shutil.disk_usage(work).free
    skipped = {
        SYNC: skip_reason(state, available, state, disk_free),
        # the clone's file holds the tied embedding twice: it is as large as the clone
        ASYNC: skip_reason(state + clone, available, clone, disk_free),
    }
    modes = {SYNC: save_sync, ASYNC: save_async}
    modes = {name: fn for name, fn in modes.items() if skipped[name] is None}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    file_bytes, checksum_s = {}, None
    if modes:
        start = time.perf_counter()
        model, optimizer = build(config, dtype)
        build_s = time.perf_counter() - start
        ckpt = checkpoint(model, optimizer)
        clone = tensor_bytes(ckpt)  # measured: the estimate above only decided what fits
        start = time.perf_counter()
        content_checksum(ckpt)  # alone, to tell its share of the synchronous stall
        checksum_s = time.perf_counter() - start
        del ckpt
        for i in range(args.repeats):
            for name, save in modes.items():
                path = work / f"{i}-{'sync' if name == SYNC else 'async'}.ckpt"
                times[name].append(save(checkpoint(model, optimizer), path))
                file_bytes[name] = path.stat().st_size
                path.unlink()
                gc.collect()  # the clone, if any, is garbage now: free it before the next save

    median = {name: [statistics.median(t[k] for t in ts) for k in (0, 1)] for name, ts in times.items()}
    rows = []
    for name in (SYNC, ASYNC):
        if skipped[name]:
            rows.append([name, gib(state), skipped[name], "", "", "", ""])
            continue
        stall, on_disk = median[name]
        ratio = f"{stall / median[SYNC][0]:.2f}x" if SYNC in median else ""
        extra = clone if name == ASYNC else 0
        rows.append([name, gib(state), f"{stall:.3f}", f"{on_disk:.3f}", ratio, gib(extra), gib(file_bytes[name])])

    print(
        f"checkpoint stall: {machine()}; {available / GiB:.1f} GiB of memory available, files written to {args.dir}\n"
    )
    print(f"`{command}`\n")
    headers = ["mode", "state (GiB)", "stall per save (s)", "until on disk (s)", "stall vs sync",
               "extra memory (GiB)", "file (GiB)"]  # fmt: skip
    print(table(headers, rows))
    n_params = state // 3 // dtype.itemsize
    print(
        f"\n{preset}: {n_params:,} parameters in {args.dtype}; the state is the weights and AdamW's two moments "
        f"after one AdamW step on random gradients (no backward pass)"
        + (f", built in {build_s:.0f} s" if modes else "")
        + f"; median of {args.repeats} save(s) per mode, alternating."
    )
    if args.repeats > 1:  # the spread, to judge the medians by: a shared disk's speed varies from save to save
        for name, ts in times.items():
            print(f"{name}, each save (stall / on disk, s): " + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in ts))
    if checksum_s is not None and SYNC in median:
        print(
            f"Of the synchronous stall, {checksum_s:.2f} s ({checksum_s / median[SYNC][0]:.0%}) is the SHA-256 "
            "checksum of the contents (content_checksum, timed alone); the asynchronous save computes it in its thread."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
