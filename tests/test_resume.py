"""Runs that lose nothing: exact resume from any checkpoint a run writes (across epochs), `last.ckpt` always the
newest state, atomic saves, signals, kills at random moments, damaged and crafted checkpoints, NaN losses.
Resuming on several ranks: test_distributed.py."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from helpers_disk import FailingWriter
from santacoder import ConfigError
from santacoder.checkpoints import discovery, storage
from santacoder.checkpoints.loading import inspect_checkpoint
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.training.callbacks import NonFiniteLossError
from santacoder.training.checkpoint_io import AtomicCheckpointIO
from santacoder.training.task import train

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BATCH = 16


def overrides(corpus: Path, *extra: str) -> list[str]:
    return [
        *run_overrides.data(corpus, seq_len=32, batch_size=BATCH),
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=32),
        "data.val_fraction=0.3",
        "trainer.accelerator=cpu",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=5",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
        "callbacks.run_checkpoint.every_n_train_steps=7",
        "callbacks.run_checkpoint.keep_last=20",
        *extra,
    ]


def recorded(compose_train, tmp_path: Path, corpus: Path, name: str, *extra: str) -> dict:
    cfg = compose_train(
        *overrides(corpus, *extra),
        "+callbacks.record._target_=helpers_record.RecordBatches",
        f"+callbacks.record.out_dir={tmp_path / name}",
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / name / "run")
    train(cfg)
    return json.loads((tmp_path / name / "rank0.json").read_text())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [name for name in wa if not torch.equal(wa[name], wb[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.integration
def test_resume_from_a_step_checkpoint_across_two_epochs_is_bitwise_exact(compose_train, small_corpus, tmp_path):
    """Resume from a checkpoint written every 7 steps (inside the batch-end hook) of epoch 0, with dropout and the
    warmup + cosine schedule: every later batch, loss and learning rate, across two epoch boundaries, and the final
    weights equal the uninterrupted run's bit for bit."""
    with_dropout = ("model.config.resid_pdrop=0.1", "model.config.attn_pdrop=0.1", "trainer.max_steps=110")
    full = recorded(compose_train, tmp_path, small_corpus, "full", *with_dropout)
    assert full["epochs"][-1] >= 2, "the run must cross two epoch boundaries"
    ckpt = tmp_path / "full" / "run" / "checkpoints" / "step_000014.ckpt"
    resumed = recorded(compose_train, tmp_path, small_corpus, "resumed", *with_dropout, f"ckpt_path={ckpt}")

    assert resumed["steps"] == full["steps"][14:]
    assert resumed["samples"] == full["samples"][14 * BATCH :]
    assert resumed["losses"] == full["losses"][14:]
    assert resumed["lrs"] == full["lrs"][14:]
    assert_same_weights(tmp_path / "full" / "run" / "checkpoints" / "last.ckpt",
                        tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt")  # fmt: skip


@pytest.mark.integration
def test_with_gradient_accumulation_saves_fall_on_optimizer_steps_and_resume_is_bitwise(
    compose_train, small_corpus, tmp_path
):
    """With 4 micro-batches per optimizer step: no checkpoint is written inside an accumulation window (none at
    micro-batch 0 of a fresh run, none again at the first micro-batch of a resumed one, which would count it as
    seen without its gradient), and resuming from a checkpoint of the run, then from one the resumed run wrote,
    ends bitwise equal to the uninterrupted run."""
    accumulate = ("trainer.accumulate_grad_batches=4", "trainer.val_check_interval=12", "trainer.max_steps=30",
                  "model.config.resid_pdrop=0.1")  # fmt: skip
    full = recorded(compose_train, tmp_path, small_corpus, "full", *accumulate)
    saved = tmp_path / "full" / "run" / "checkpoints"
    assert sorted(p.name for p in saved.glob("step_*.ckpt")) == [f"step_{s:06d}.ckpt" for s in (7, 14, 21, 28)]
    first = recorded(
        compose_train, tmp_path, small_corpus, "first", *accumulate, f"ckpt_path={saved / 'step_000014.ckpt'}"
    )
    resumed = tmp_path / "first" / "run" / "checkpoints"
    assert sorted(p.name for p in resumed.glob("step_*.ckpt")) == ["step_000021.ckpt", "step_000028.ckpt"]
    # a step is 4 micro-batches of BATCH / 4 rows
    assert first["losses"] == full["losses"][14 * 4 :] and first["samples"] == full["samples"][14 * BATCH :]
    assert_same_weights(saved / "last.ckpt", resumed / "last.ckpt")
    recorded(compose_train, tmp_path, small_corpus, "second", *accumulate, f"ckpt_path={resumed / 'step_000021.ckpt'}")
    assert_same_weights(saved / "last.ckpt", tmp_path / "second" / "run" / "checkpoints" / "last.ckpt")


@pytest.mark.integration
def test_a_finished_run_trained_longer_continues_mid_epoch(compose_train, small_corpus, tmp_path):
    """A run that max_steps stopped in the middle of an epoch, resumed from its final last.ckpt with a higher
    max_steps, continues that epoch with the samples an uninterrupted run sees next (not the next epoch: Lightning
    counts the epoch as completed once its loop ends, so the final state is saved at the last batch)."""
    full = recorded(compose_train, tmp_path, small_corpus, "full", "trainer.max_steps=6")
    recorded(compose_train, tmp_path, small_corpus, "short", "trainer.max_steps=3")
    last = tmp_path / "short" / "run" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["epoch"] == 0
    longer = recorded(compose_train, tmp_path, small_corpus, "longer", "trainer.max_steps=6", f"ckpt_path={last}")
    assert longer["epochs"] == full["epochs"][3:] == [0, 0, 0]
    assert longer["samples"] == full["samples"][3 * BATCH :]


def test_last_ckpt_is_the_newest_state_whatever_the_loss(compose_train, small_corpus, tmp_path):
    """A finished run's last.ckpt holds its last step even when validation stopped improving; periodic files are
    pruned to keep_last; the best one is kept apart; no temporary file is left."""
    cfg = compose_train(
        *overrides(small_corpus, "trainer.max_steps=25", "callbacks.run_checkpoint.keep_last=2"),
        "model.optimizer.lr=0.5",  # diverges: validation at step 20 is worse than at step 10
    )
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 25
    # santacoder info: the newest validation a file saw, and that it ran before the file's own step
    details = inspect_checkpoint(checkpoints / "last.ckpt").details
    assert details["step"] == "25"
    assert details["val/loss"].endswith("(validated at step 20, before this file was written)")
    assert sorted(p.name for p in checkpoints.glob("step_*.ckpt")) == ["step_000014.ckpt", "step_000021.ckpt"]
    assert len(list(checkpoints.glob("best_step_*.ckpt"))) == 1
    assert not list(checkpoints.glob(".*"))
    # a best file of the last step, written after last.ckpt (as a run whose last validation is its best does):
    # a run directory still resumes from last.ckpt, the name a user expects
    best = checkpoints / "best_step_000025.ckpt"
    shutil.copy(checkpoints / "last.ckpt", best)
    os.utime(best, ns=(time.time_ns() + 10**9,) * 2)
    assert discovery.resolve_resume(str(cfg.paths.output_dir), cfg.paths.output_dir) == checkpoints / "last.ckpt"


def saved_state(path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {"step": checkpoint["global_step"], "weights": checkpoint["state_dict"],
            "moments": checkpoint["optimizer_states"][0]["state"]}  # fmt: skip


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = saved_state(a), saved_state(b)
    assert sa["step"] == sb["step"]
    for name in ("weights", "moments"):
        flat_a = torch.utils._pytree.tree_leaves(sa[name])
        flat_b = torch.utils._pytree.tree_leaves(sb[name])
        assert len(flat_a) == len(flat_b) and all(torch.equal(x, y) for x, y in zip(flat_a, flat_b, strict=True)), name


@pytest.mark.integration
def test_asynchronous_saves_and_saves_without_hard_links_hold_the_same_states(
    compose_train, small_corpus, tmp_path, monkeypatch
):
    """trainer.plugins.0.asynchronous=true: each file holds the state of the step it is named for (the snapshot is
    taken before training goes on), last.ckpt is linked once the newest file is complete, and pruning keeps the
    newest keep_last. A filesystem without hard links (os.link failing, as on object-store mounts): last.ckpt is
    a copy with the same state. Both against the same run saved synchronously."""
    steps = ("trainer.max_steps=21", "callbacks.run_checkpoint.keep_last=2")

    def run(name: str, *extra: str) -> Path:
        cfg = compose_train(*overrides(small_corpus, *steps, *extra))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
        train(cfg)
        return tmp_path / name / "checkpoints"

    reference = run("sync")
    asynchronous = run("async", "trainer.plugins.0.asynchronous=true")
    with monkeypatch.context() as m:
        m.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted")))
        no_links = run("no_links")
    for saved in (asynchronous, no_links):
        assert sorted(p.name for p in saved.glob("step_*.ckpt")) == ["step_000014.ckpt", "step_000021.ckpt"]
        for name in ("step_000014.ckpt", "step_000021.ckpt", "last.ckpt"):
            assert_same_state(reference / name, saved / name)
        assert not list(saved.glob(".*"))
    assert (asynchronous / "last.ckpt").stat().st_ino == (asynchronous / "step_000021.ckpt").stat().st_ino
    assert (no_links / "last.ckpt").stat().st_ino != (no_links / "step_000021.ckpt").stat().st_ino


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm, a filesystem other than $TMPDIR")
def test_a_save_that_fails_mid_write_leaves_the_previous_last_ckpt(compose_train, small_corpus, tmp_path, monkeypatch):
    run_dir = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="santacoder-test-"))
    try:
        if os.stat(run_dir).st_dev == os.stat(tempfile.gettempdir()).st_dev:
            pytest.skip("/dev/shm and $TMPDIR are one filesystem here")
        tmp_before = set(os.listdir(tempfile.gettempdir()))
        saves = []

        def open_for_write(path: Path):
            saves.append(path.with_name(path.name.split(".ckpt")[0] + ".ckpt"))
            return FailingWriter(path, limit=50_000) if len(saves) == 3 else open(path, "wb")

        monkeypatch.setattr(storage, "open_for_write", open_for_write)
        cfg = compose_train(*overrides(small_corpus, "trainer.max_steps=30"))
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        # saves: step_7 (last.ckpt is its hard link); at step 10's validation the best, then last.ckpt: that fails
        with pytest.raises((OSError, RuntimeError)):  # torch reports the failed write as a RuntimeError
            train(cfg)
        assert [p.name for p in saves] == [".step_000007.ckpt", ".best_step_000010.ckpt", ".last.ckpt"]
        checkpoints = run_dir / "checkpoints"
        last = read_checkpoint(checkpoints / "last.ckpt", check_contents=True)
        assert last["global_step"] == 7
        assert sorted(p.name for p in checkpoints.iterdir()) == [
            "best_step_000010.ckpt",
            "last.ckpt",
            "step_000007.ckpt",
        ]
        assert set(os.listdir(tempfile.gettempdir())) <= tmp_before | {p for p in os.listdir(tempfile.gettempdir())
                                                                        if not p.endswith(".ckpt")}  # fmt: skip
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_leftovers_of_a_killed_save_are_removed_at_start(compose_train, small_corpus, tmp_path):
    cfg = compose_train(*overrides(small_corpus, "trainer.max_steps=2"))
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    checkpoints.mkdir(parents=True)
    leftover = checkpoints / f".last.ckpt.12345{storage.TMP_SUFFIX}"
    leftover.write_bytes(b"\0" * 1000)
    train(cfg)
    assert not leftover.exists() and (checkpoints / "last.ckpt").is_file()


def damage(path: Path, offset_fraction: float = 0.5, size: int = 2048) -> None:
    data = bytearray(path.read_bytes())
    start = int(len(data) * offset_fraction)
    data[start : start + size] = os.urandom(size)
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_naming_the_newest_good_one(compose_train, small_corpus, tmp_path):
    cfg = compose_train(*overrides(small_corpus, "trainer.max_steps=14", "trainer.val_check_interval=100"))
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    last = checkpoints / "last.ckpt"
    last.unlink()  # it is a hard link of step_000014.ckpt: damage a copy of its own
    shutil.copy(checkpoints / "step_000014.ckpt", last)
    damage(last, offset_fraction=0.6)
    with pytest.raises(ConfigError) as info:
        train(compose_train(*overrides(small_corpus, "trainer.max_steps=20"), f"ckpt_path={last}"))
    message = str(info.value)
    assert "\n" not in message and ("damaged" in message or "truncated" in message)
    assert str(checkpoints / "step_000014.ckpt") in message
    # a run directory (or ckpt_path=last) skips the damaged file and resumes from the newest good one
    resumed = compose_train(*overrides(small_corpus, "trainer.max_steps=16"), f"ckpt_path={cfg.paths.output_dir}")
    assert train(resumed)["step"] == 16


def test_ckpt_path_is_loaded_weights_only_whatever_the_environment(tmp_path, monkeypatch):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    crafted = tmp_path / "checkpoints" / "last.ckpt"
    crafted.parent.mkdir()
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}}, "x": Exploit()}, crafted)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ConfigError, match="refusing"):
        discovery.resolve_resume(str(crafted), tmp_path)
    with pytest.raises(ConfigError):
        AtomicCheckpointIO().load_checkpoint(crafted)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "max_in_a_row,match",
    [
        (2, r"NaN or inf for 2 step\(s\) in a row from step 9"),  # the loss guard stops first
        (3, r"the weights hold NaN or inf at step 10: not saving them"),  # the validation save at step 10 is refused
    ],
)
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    compose_train, small_corpus, tmp_path, max_in_a_row, match
):
    cfg = compose_train(
        *overrides(small_corpus, "trainer.max_steps=40", "trainer.log_every_n_steps=1"),
        f"callbacks.nonfinite_loss.max_in_a_row={max_in_a_row}",
        "+callbacks.poison._target_=helpers_record.PoisonWeights",
        "+callbacks.poison.step=8",  # the loss is NaN from step 9 on
    )
    with pytest.raises(NonFiniteLossError, match=match):
        train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    last = read_checkpoint(checkpoints / "last.ckpt", check_contents=True)
    assert last["global_step"] == 7  # step_7: nothing was saved after the weights turned NaN
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_run_ids_of_jobs_started_together_differ():
    # conf/run_ids.py alone (standard library only): four interpreters started together, without the package
    path = ROOT / "src" / "santacoder" / "conf" / "run_ids.py"
    code = (f"import importlib.util as u; s = u.spec_from_file_location('run_ids', {str(path)!r}); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.run_id())")  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "SANTACODER_RUN_ID")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=clean)
             for _ in range(4)]  # fmt: skip
    ids = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert len(set(ids)) == 4, ids


# -- signals, through `python train.py` ---------------------------------------------------------------------


def env(tmp_path: Path) -> dict[str, str]:
    pythonpath = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    drop = ("SLURM_JOB_ID", "SLURM_PROCID", "RANK", "LOCAL_RANK", "SANTACODER_RUN_ID")
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    return {**clean, "PROJECT_ROOT": str(tmp_path), "PYTHONPATH": pythonpath, "WANDB_MODE": "offline",
            "OMP_NUM_THREADS": "1"}  # fmt: skip


def start_training(tmp_path: Path, corpus: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides(corpus, *extra), f"paths.data_dir={tmp_path / 'data'}"]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for(path_glob, tmp_path: Path, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(tmp_path.glob(path_glob))
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"nothing matched {path_glob} after {timeout} s")


@pytest.mark.integration
@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_last_ckpt_and_exits_with_its_status(small_corpus, tmp_path, sig, status):
    proc = start_training(tmp_path, small_corpus, "trainer.max_steps=100000")
    try:
        wait_for("logs/train/runs/*/checkpoints/step_000007.ckpt", tmp_path)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == status, out[-3000:]
    run_dir = next((tmp_path / "logs" / "train" / "runs").iterdir())
    stopped = read_checkpoint(run_dir / "checkpoints" / "last.ckpt", check_contents=True)
    assert stopped["global_step"] >= 7
    if sig != signal.SIGTERM:
        return  # how a stopped run resumes does not depend on the signal that stopped it: tested once
    # resuming from the run directory continues in that directory, from that step
    steps = stopped["global_step"] + 2
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides(small_corpus, f"trainer.max_steps={steps}"),
         f"paths.data_dir={tmp_path / 'data'}", f"ckpt_path={run_dir}"],
        cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "logs" / "train" / "runs").iterdir()] == [run_dir.name]
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == steps


@pytest.mark.integration
@pytest.mark.parametrize("hook", ["setup", "on_fit_end"])
def test_sigusr1_under_slurm_requeues_the_job_outside_training_too(small_corpus, tmp_path, hook):
    """SLURM's warning signal before the training loop (data preparation, setup) or after its last step: nothing
    to save, but the job is not done, so it is requeued (scontrol, faked here) and exits 0 at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides(small_corpus, "trainer.max_steps=3"),
           f"paths.data_dir={tmp_path / 'data'}", "+callbacks.usr1._target_=helpers_record.SignalSelfIn",
           f"+callbacks.usr1.hook={hook}", "+callbacks.usr1.signal=SIGUSR1"]  # fmt: skip
    slurm = {**env(tmp_path), "SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=tmp_path, env=slurm, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"


@pytest.mark.integration
def test_training_killed_at_random_moments_and_during_saves_ends_with_the_same_weights(tmp_path):
    """scripts/fault_injection.py in small: SIGKILL twice (once in the middle of a checkpoint write), resume
    each time; the final weights equal an uninterrupted run's."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fault_injection.py"), "--kills", "2", "--small", "--steps", "300",
         "--workdir", str(tmp_path)],
        env=env(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # the kill aimed at a save hit one (the other, at a random moment, may too); the weights are the same
    assert re.search(r"\n2 kills, [12] during a save", result.stdout) and "weights EQUAL" in result.stdout


@pytest.mark.integration
@pytest.mark.skipif(
    os.environ.get("SANTACODER_TEST_SLURM") != "1",
    reason="starts a real one-machine SLURM as root (apt-installs slurm-wlm): run `make test-slurm`, or set "
    "SANTACODER_TEST_SLURM=1",
)
def test_slurm_job_is_requeued_on_sigusr1_and_finishes_in_the_same_run():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm" / "test_slurm.sh"), "--train"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0 and "\nPASS\n" in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]
