"""Kill training again and again (SIGKILL: no handler runs), resume each time, and check that the final weights
equal an uninterrupted run's, bit for bit.

    python scripts/fault_injection.py --kills 20            # the README's number (about 8 minutes on 2 cores)
    python scripts/fault_injection.py --kills 2 --small --steps 600   # the test suite's version

Each start is killed at a random moment, chosen so that the run makes about 1/(4N) of its progress per start;
every other kill (``--during-save 0.5``) then also wait for the next checkpoint write to be under way (its
temporary file exists) and kill in the middle of it. After each kill the next start resumes with
``ckpt_path=last`` in the same run directory. The script prints one row per kill and a summary, and exits
non-zero unless the weights are equal and at least a quarter of the kills hit a partial write.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from santacoder.checkpoints.storage import TMP_SUFFIX, read_checkpoint
from santacoder.data.corpus import default_source

ROOT = Path(__file__).resolve().parents[1]

SMALL_MODULES = ("colorsys", "bisect", "keyword", "this", "glob", "fnmatch", "stat", "token", "abc", "nturl2path",
                 "opcode", "sched")  # fmt: skip


def make_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in SMALL_MODULES:
        shutil.copy(default_source() / f"{name}.py", directory / f"{name}.py")
    return directory


def overrides(args, corpus: Path, workdir: Path) -> list[str]:
    width, layers = (32, 2) if args.small else (256, 4)  # 4 x 256: a 40 MB checkpoint, tens of ms to write
    return [
        f"data.source={corpus}", "data.vocab_size=512", "data.seq_len=32", "data.batch_size=16",
        "data.num_workers=0", "data.val_fraction=0.3", f"paths.data_dir={workdir / 'data'}",
        f"model.config.n_layer={layers}", f"model.config.n_embd={width}", "model.config.n_head=4",
        f"model.config.n_inner={4 * width}", "model.config.n_positions=32",
        "model.config.resid_pdrop=0.1",  # dropout: the generator states must survive the kills too
        "trainer.accelerator=cpu", f"trainer.max_steps={args.steps}", "trainer.val_check_interval=20",
        "trainer.limit_val_batches=2", "callbacks.run_checkpoint.every_n_train_steps=5",
        "callbacks.progress_bar.refresh_rate=0", "extras.print_config=false", "logger=csv",
    ]  # fmt: skip


def start(args, corpus: Path, workdir: Path, run_dir: Path, log) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides(args, corpus, workdir), f"hydra.run.dir={run_dir}",
           "ckpt_path=last"]  # fmt: skip
    env = {**os.environ, "PROJECT_ROOT": str(workdir), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def partial_writes(checkpoints: Path) -> list[Path]:
    return list(checkpoints.glob(f".*{TMP_SUFFIX}")) if checkpoints.is_dir() else []


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_to_end(args, corpus, workdir, run_dir, log) -> None:
    proc = start(args, corpus, workdir, run_dir, log)
    if proc.wait() != 0:
        raise SystemExit(f"training in {run_dir} failed with status {proc.returncode}; see {log.name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 500, --small: 400)")
    parser.add_argument("--during-save", type=float, default=0.5, help="share of kills aimed at a save")
    parser.add_argument("--small", action="store_true", help="a 2 x 32 model: seconds per start, for the tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    args = parser.parse_args()
    args.steps = args.steps or (400 if args.small else 500)
    rng = random.Random(args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="santacoder-faults-"))
    corpus = make_corpus(workdir / "corpus")
    log_path = workdir / "train.log"
    print(f"work directory: {workdir} (training output in {log_path})")

    with open(log_path, "a") as log:
        began = time.monotonic()
        reference = workdir / "reference"
        proc = start(args, corpus, workdir, reference, log)
        first_save = None
        while proc.poll() is None:  # how long a start takes until its first checkpoint: where kills are aimed
            if first_save is None and (reference / "checkpoints" / "last.ckpt").exists():
                first_save = time.monotonic() - began
            time.sleep(0.05)
        if proc.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed; see {log_path}")
        full_time = time.monotonic() - began
        first_save = first_save or full_time / 2
        print(f"uninterrupted run: {args.steps} steps in {full_time:.1f} s, first checkpoint after {first_save:.1f} s")

        chaos = workdir / "interrupted"
        checkpoints = chaos / "checkpoints"
        print(f"{'kill':>4}  {'aimed at':<12} {'after s':>7}  {'partial write':<13} {'last.ckpt step':>14}")
        hits = 0
        span = (full_time - first_save) / (2 * args.kills)  # about 1/(4 kills) of the run per start, on average
        for k in range(1, args.kills + 1):
            aim_save = int(k * args.during_save) > int((k - 1) * args.during_save)  # every 1/during_save-th kill
            proc = start(args, corpus, workdir, chaos, log)
            t0 = time.monotonic()
            armed = t0 + rng.uniform(0.9 * first_save, first_save + span)
            while proc.poll() is None and time.monotonic() < armed:
                time.sleep(0.01)
            while aim_save and proc.poll() is None and not partial_writes(checkpoints):
                time.sleep(0.0005)  # the next save's temporary file: kill in the middle of writing it
            if proc.poll() is not None:
                print(f"{k:>4}  training finished before the kill; rerun with more --steps")
                return 1
            kill(proc)
            hit = bool(partial_writes(checkpoints))  # a save was under way: its temporary file is left
            hits += hit
            step = (
                read_checkpoint(checkpoints / "last.ckpt")["global_step"]
                if (checkpoints / "last.ckpt").exists()
                else "-"
            )
            print(f"{k:>4}  {'a save' if aim_save else 'any moment':<12} {time.monotonic() - t0:>7.1f}  "
                  f"{'yes' if hit else 'no':<13} {step:>14}", flush=True)  # fmt: skip
        run_to_end(args, corpus, workdir, chaos, log)

    expected = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    got = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    same_step = expected["global_step"] == got["global_step"] == args.steps
    differing = [n for n in expected["state_dict"] if not torch.equal(expected["state_dict"][n], got["state_dict"][n])]
    equal = same_step and not differing
    enough_hits = hits * 4 >= args.kills
    print(
        f"\n{args.kills} kills, {hits} during a save ({hits / max(1, args.kills):.0%}); final step "
        f"{got['global_step']} of {args.steps}; weights {'EQUAL' if equal else 'DIFFERENT'} to the uninterrupted "
        f"run's ({len(expected['state_dict'])} tensors{', ' + str(len(differing)) + ' differ' if differing else ''})"
    )
    if not enough_hits:
        print("fewer than a quarter of the kills hit a partial write")
    return 0 if equal and enough_hits else 1


if __name__ == "__main__":
    raise SystemExit(main())
