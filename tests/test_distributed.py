"""Multi-process training on CPU with the gloo backend, through `python train.py` as users start it.

One uninterrupted two-rank run with gradient accumulation (``two_ranks``, shared by the module) feeds several
assertions: each rank's own samples, throughput and MFU, val/loss independent of the number of ranks, and the
reference that a two-rank run resumed from each kind of checkpoint (periodic, written at a validation, written on
SIGTERM) must reproduce bit for bit, with the file chosen once for the job by rank 0. Then: a one-rank checkpoint
resumed on two ranks continues the global sample order until SIGTERM reaches every rank at once; a two-"node"
torchrun job on 127.0.0.1 trains as one process does; fp16 loss scaling; the paper's experiment; the Hydra
multirun guard."""

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder import ConfigError, GPTConfig
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.conf import build
from santacoder.training.flops import measured_flops_per_batch
from santacoder.training.preflight import refuse_multirun_with_ddp, resolve_model_config
from santacoder.training.task import train

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BATCH = 16  # global batch: 8 per rank
STEPS = 20
ACCUMULATE = 4  # the shared run's micro-batches per optimizer step: 2 rows per rank each


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


def record(out_dir: Path) -> list[str]:
    return ["+callbacks.record._target_=helpers_record.RecordBatches", f"+callbacks.record.out_dir={out_dir}"]


def env(root: Path, **extra: str) -> dict[str, str]:
    drop = ("SLURM_JOB_ID", "SLURM_PROCID", "RANK", "LOCAL_RANK", "SANTACODER_RUN_ID")
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    pythonpath = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**clean, "PROJECT_ROOT": str(root), "PYTHONPATH": pythonpath, "WANDB_MODE": "offline",
            "OMP_NUM_THREADS": "1", **extra}  # fmt: skip


def two_rank_command(root: Path, corpus: Path, run_dir: Path | None, *extra: str) -> list[str]:
    """``python train.py`` on two CPU ranks; without ``run_dir`` the run directory is the run id's, as for users."""
    where = [f"hydra.run.dir={run_dir}"] if run_dir else []
    return [sys.executable, str(ROOT / "train.py"), *overrides(corpus, *extra), "trainer=ddp_cpu", "trainer.devices=2",
            f"paths.data_dir={root / 'data'}", *where]  # fmt: skip


def launch(cmd: list[str], root: Path, status: int = 0) -> str:
    """Run ``cmd`` in its own session (a signal to its process group reaches every rank, not pytest)."""
    proc = subprocess.run(cmd, cwd=root, env=env(root), capture_output=True, text=True, timeout=600,
                          start_new_session=True)  # fmt: skip
    assert proc.returncode == status, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def ranks(record_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(record_dir.glob("rank*.json"))]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@dataclass
class TwoRankRun:
    root: Path
    corpus: Path
    run_dir: Path
    ranks: list[dict]
    metrics: dict
    settings: tuple[str, ...]


@pytest.fixture(scope="module")
def two_ranks(small_corpus, tmp_path_factory) -> TwoRankRun:
    """One uninterrupted two-rank run: dropout, 20 steps of 4 micro-batches, a checkpoint every 7 steps, validation
    over the whole split at steps 10 and 20 (last.ckpt as written at step 10 kept as validation_step10.ckpt), a
    stand-in peak FLOP/s so MFU is computed on CPU too."""
    root = tmp_path_factory.mktemp("two_ranks")
    settings = ("model.config.resid_pdrop=0.1", f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=1.0",
                f"trainer.accumulate_grad_batches={ACCUMULATE}", f"trainer.val_check_interval={10 * ACCUMULATE}",
                "data.seq_len=30", "callbacks.throughput.window_size=3",
                "callbacks.throughput.peak_flops=1e12")  # fmt: skip
    keep = ["+callbacks.keep._target_=helpers_record.CopyCheckpointAt", "+callbacks.keep.step=10",
            f"+callbacks.keep.copy_to={root / 'validation_step10.ckpt'}"]  # fmt: skip
    launch(two_rank_command(root, small_corpus, None, *settings, *record(root / "record"), *keep), root)
    (run_dir,) = (root / "logs" / "train" / "runs").iterdir()  # PROJECT_ROOT=root; both ranks wrote into one
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return TwoRankRun(root, small_corpus, run_dir, ranks(root / "record"), metrics, settings)


@pytest.mark.integration
def test_two_ranks_train_on_disjoint_samples_into_one_run_directory(two_ranks):
    r0, r1 = two_ranks.ranks
    assert (r0["rank"], r1["rank"], r0["world_size"], r1["world_size"]) == (0, 1, 2, 2)
    assert len(r0["samples"]) == len(r1["samples"]) == STEPS * BATCH // 2
    assert not set(r0["samples"]) & set(r1["samples"])
    assert len(list((two_ranks.root / "logs" / "train" / "runs").iterdir())) == 1  # both ranks wrote into one
    assert (two_ranks.run_dir / "checkpoints" / "last.ckpt").is_file()
    assert read_checkpoint(two_ranks.run_dir / "checkpoints" / "last.ckpt")["rng_states"]["cpu"].shape[0] == 2


@pytest.mark.integration
def test_throughput_is_global_and_mfu_per_device(two_ranks):
    metrics = two_ranks.metrics
    assert metrics["train/tokens_per_sec"] == pytest.approx(2 * metrics["train/device/tokens_per_sec"])
    # MFU per device from the FLOPs of one device's micro batch (8 x 30 tokens), against the stand-in 1e12 peak
    config = GPTConfig(vocab_size=512, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64)
    flops_per_token = measured_flops_per_batch(config, 8, 30) / (8 * 30)
    expected_mfu = metrics["train/device/tokens_per_sec"] * flops_per_token / 1e12
    assert metrics["train/mfu"] == pytest.approx(expected_mfu, rel=0.05)


@pytest.mark.integration
def test_val_loss_of_two_ranks_is_the_val_loss_of_one_process(two_ranks, compose_train):
    """The split's sample count does not divide by 2: no sample counts twice, so the two-rank run's val/loss is
    what one process computes from the same weights."""
    cfg = compose_train(*overrides(two_ranks.corpus, *two_ranks.settings))
    with open_dict(cfg):
        cfg.paths.data_dir = str(two_ranks.root / "data")  # the run's tokenizer and token store
    datamodule = build(cfg, "data")
    resolve_model_config(cfg, datamodule.tokenizer_size())
    module = build(cfg, "model")
    module.load_state_dict(read_checkpoint(two_ranks.run_dir / "checkpoints" / "last.ckpt")["state_dict"])
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, limit_val_batches=1.0)
    (one_process,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    assert len(datamodule.datasets["val"]) % 2 == 1  # an odd number of validation samples
    assert one_process["val/loss"] == pytest.approx(two_ranks.metrics["val/loss"], rel=1e-6)


def assert_continues(two_ranks: TwoRankRun, record_dir: Path, step: int, run_dir: Path) -> None:
    """Each rank of a run resumed at optimizer ``step`` trained on the uninterrupted run's samples from there, to
    the same losses (dropout included: each rank gets its own generator state back) and the same final weights."""
    for full, resumed in zip(two_ranks.ranks, ranks(record_dir), strict=True):
        assert resumed["samples"] == full["samples"][step * BATCH // 2 :]
        assert resumed["losses"] == full["losses"][step * ACCUMULATE :]
    expected = weights(two_ranks.run_dir / "checkpoints" / "last.ckpt")
    got = weights(run_dir / "checkpoints" / "last.ckpt")
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["periodic", "validation"])
def test_a_two_rank_run_with_accumulation_resumed_is_the_uninterrupted_one_bit_for_bit(two_ranks, tmp_path, kind):
    """From step_000007.ckpt (periodic, right after an optimizer step) and from last.ckpt as a validation wrote it
    at step 10."""
    step, ckpt = {
        "periodic": (7, two_ranks.run_dir / "checkpoints" / "step_000007.ckpt"),
        "validation": (10, two_ranks.root / "validation_step10.ckpt"),
    }[kind]
    assert read_checkpoint(ckpt)["global_step"] == step
    cmd = two_rank_command(two_ranks.root, two_ranks.corpus, tmp_path / "run", *two_ranks.settings,
                           *record(tmp_path / "record"), f"ckpt_path={ckpt}")  # fmt: skip
    launch(cmd, two_ranks.root)
    assert_continues(two_ranks, tmp_path / "record", step, tmp_path / "run")


@pytest.mark.integration
def test_a_job_stopped_by_sigterm_resumes_from_the_one_file_rank_0_chose(two_ranks, tmp_path):
    """SIGTERM in the middle of step 13's accumulation window (2 of its 4 micro-batches done) stops both ranks at
    the end of that step, never inside the window, and saves last.ckpt. The requeued job (ckpt_path=last, same run
    directory) resumes from it although rank 1's view of the directory is stale (as it was at step 7): rank 0 chose
    the file and verified it, the one checksum read of the job, and both ranks end bitwise equal to the
    uninterrupted run."""
    run = tmp_path / "run"
    stop = ["+callbacks.signal._target_=helpers_record.SignalAt", "+callbacks.signal.step=12",
            "+callbacks.signal.micro_batch=2"]  # fmt: skip
    launch(two_rank_command(two_ranks.root, two_ranks.corpus, run, *two_ranks.settings, *record(tmp_path / "stopped"),
                            *stop), two_ranks.root, status=143)  # fmt: skip
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 13
    stale_view = tmp_path / "as_rank_1_sees_it"  # the directory as it was at step 7
    stale_view.mkdir()
    for name in ("step_000007.ckpt", "last.ckpt"):
        shutil.copy(two_ranks.run_dir / "checkpoints" / "step_000007.ckpt", stale_view / name)
    stale = ["+callbacks.stale._target_=helpers_record.StaleListing", f"+callbacks.stale.stale_view={stale_view}",
             f"+callbacks.stale.out_dir={tmp_path / 'verify'}"]  # fmt: skip
    launch(two_rank_command(two_ranks.root, two_ranks.corpus, run, *two_ranks.settings, *record(tmp_path / "resumed"),
                            "ckpt_path=last", *stale), two_ranks.root)  # fmt: skip
    assert_continues(two_ranks, tmp_path / "resumed", 13, run)
    verifications = [json.loads((tmp_path / "verify" / f"verify_rank{r}.json").read_text()) for r in (0, 1)]
    assert verifications == [1, 0]


@pytest.mark.integration
def test_a_one_rank_checkpoint_resumes_on_two_ranks_until_sigterm_reaches_every_rank(
    compose_train, small_corpus, tmp_path
):
    """Resumed on two ranks, a one-rank run's checkpoint continues its global sample order (no dropout: the
    losses agree too). SIGTERM, sent to the job's process group at step 20 as SLURM and a terminal do, reaches both
    ranks at once: they stop at the same batch, save last.ckpt with both ranks' generator states, and exit 143."""
    cfg = compose_train(*overrides(small_corpus, "trainer.max_steps=24"), *record(tmp_path / "one"))
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "one" / "run")
        cfg.paths.data_dir = str(tmp_path / "data")
    train(cfg)
    (one,) = ranks(tmp_path / "one")
    ckpt = tmp_path / "one" / "run" / "checkpoints" / "step_000014.ckpt"
    cmd = two_rank_command(tmp_path, small_corpus, tmp_path / "two" / "run", "trainer.max_steps=24",
                           *record(tmp_path / "two"), "+callbacks.signal._target_=helpers_record.SignalAt",
                           "+callbacks.signal.step=20", f"ckpt_path={ckpt}")  # fmt: skip
    launch(cmd, tmp_path, status=143)
    r0, r1 = ranks(tmp_path / "two")
    assert r0["steps"] == r1["steps"] == one["steps"][14:20]  # stopped together, after step 20
    micro = BATCH // 2
    for i in range(6):  # each step's global batch: the same 16 samples as the one-rank run's
        both = r0["samples"][i * micro : (i + 1) * micro] + r1["samples"][i * micro : (i + 1) * micro]
        assert sorted(both) == sorted(one["samples"][(14 + i) * BATCH : (15 + i) * BATCH])
    # DDP averages the ranks' mean losses (not token-weighted over the global batch): close, not equal
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(one["losses"][14:20]), rtol=2e-3, atol=0)
    stopped = read_checkpoint(tmp_path / "two" / "run" / "checkpoints" / "last.ckpt", check_contents=True)
    assert stopped["global_step"] == 20 and stopped["rng_states"]["cpu"].shape[0] == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_two_node_torchrun_matches_single_process(compose_train, small_corpus, tmp_path):
    """scripts/torchrun.sh with --nnodes 2, both node ranks on 127.0.0.1, trains to the same losses as one
    process with the same global batch, seed and no dropout; only rank 0 writes the config copy and the log."""
    single = compose_train(*overrides(small_corpus, "trainer.max_steps=6"), *record(tmp_path / "single"))
    with open_dict(single):
        single.paths.data_dir = str(tmp_path / "data")
    train(single)
    port = str(free_port())
    node_env = dict(NNODES="2", GPUS_PER_NODE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RUN_ID="two-nodes",
                    TRAINER="ddp_cpu", PYTHON=sys.executable)  # fmt: skip
    cmd = ["bash", str(ROOT / "scripts" / "torchrun.sh"), *overrides(small_corpus, "trainer.max_steps=6"),
           *record(tmp_path / "multi")]  # fmt: skip
    procs = [
        subprocess.Popen(
            cmd,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env(tmp_path, NODE_RANK=str(rank), **node_env),
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    (one,), multi = ranks(tmp_path / "single"), ranks(tmp_path / "multi")
    assert multi[0]["world_size"] == 2
    # the two ranks' micro batches together are exactly the single process's batches
    assert sorted(multi[0]["samples"] + multi[1]["samples"]) == sorted(one["samples"])
    torch.testing.assert_close(torch.tensor(multi[0]["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-5)
    run_dir = tmp_path / "logs" / "train" / "runs" / "two-nodes"  # PROJECT_ROOT=tmp_path
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    log = (run_dir / "train.log").read_text()  # every rank logs its batch split; only rank 0's reaches the file
    assert log.count("final metrics") == 1 and log.count("] - global batch 16 sequences") == 1


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        ),
    ],
)
def test_fp16_overflowing_steps_are_skipped_and_counted(device):
    """Dynamic loss scaling with 16-mixed: an overflowing step (a forced inf loss, whose gradients through the
    chunked loss are inf) is skipped, counted, and the scale halves; the weights stay finite. On a GPU with
    Lightning's own scaler; on CPU (where Lightning builds none) with a CPU GradScaler running the same logic."""
    from lightning.pytorch.plugins import MixedPrecision
    from torch.utils.data import DataLoader

    from santacoder.training.callbacks import LossScaleMonitor
    from santacoder.training.module import SantaCoderLitModule

    class Overflowing(SantaCoderLitModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * (float("inf") if batch_idx in (0, 2, 5) else 1.0)  # the very first step too

    torch.manual_seed(0)
    module = Overflowing(
        dict(vocab_size=128, n_positions=16, n_embd=32, n_layer=1, n_head=2), **run_overrides.training_options()
    )
    data = [{"input_ids": torch.randint(0, 128, (2, 16)), "labels": torch.randint(0, 128, (2, 16))} for _ in range(8)]
    monitor = LossScaleMonitor()
    precision = {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=65536.0))]}
    if device == "cuda":
        precision = {"precision": "16-mixed", "devices": 1}  # Lightning's GradScaler, initial scale 65536
    trainer = L.Trainer(
        accelerator=device,
        **precision,
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        callbacks=[monitor],
        enable_progress_bar=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(module, DataLoader(data, batch_size=None))
    assert monitor.skipped_steps == 3
    assert trainer.callback_metrics["train/loss_scale"] == 65536.0 / 8
    assert all(torch.isfinite(p).all() for p in module.parameters())  # the inf gradients were never applied


def test_the_santacoder_1b_experiment_builds_the_papers_model_on_the_meta_device(compose_train, corpus_dir):
    """The experiment's model, built as train.py builds it, but on the meta device: 1,124,886,528 parameters,
    without a byte of weights."""
    cfg = compose_train("experiment=santacoder_1b", f"data.source={corpus_dir}")
    datamodule = build(cfg, "data")
    resolve_model_config(cfg, datamodule.tokenizer_size())  # 49,152 BPE tokens -> 49,280 embedding rows
    assert cfg.model.config.vocab_size == 49280
    with torch.device("meta"):
        module = build(cfg, "model")
    assert module.model.num_params() == 1_124_886_528
    assert next(module.parameters()).is_meta


@pytest.mark.integration
def test_the_santacoder_1b_experiment_trains_at_a_reduced_shape(compose_train, corpus_dir, tokenizer, tmp_path):
    """The paper's settings (optimizer, schedule, precision options, callbacks) for one step on a CPU, with the
    shape reduced from 24 x 2048 to 1 x 64: what the experiment overlays runs end to end."""
    tok_file = tmp_path / "tokenizer.json"
    tokenizer.save(tok_file)
    cfg = compose_train(
        "experiment=santacoder_1b",
        f"data.source={corpus_dir}",
        f"data.tokenizer={tok_file}",
        "data.seq_len=32",
        "data.batch_size=2",
        "data.num_workers=0",
        *run_overrides.model(n_layer=1, n_embd=64, n_head=4, n_inner=256, n_positions=64),
        "trainer.accelerator=cpu",
        "trainer.precision=bf16-true",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "logger=csv",
        "extras.print_config=false",
    )
    assert cfg.model.optimizer.lr == 2e-4 and cfg.data.fim_rate == 0.5  # the paper's, from the experiment
    metrics = train(cfg)
    assert metrics["step"] == 2 and torch.isfinite(torch.tensor(metrics["val/loss"]))


def test_multirun_with_ddp_is_refused(compose_train):
    from hydra.types import RunMode

    cfg = compose_train("trainer=ddp_cpu")
    hydra_cfg = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN}})
    HydraConfig.instance().cfg = hydra_cfg
    try:
        with pytest.raises(ConfigError, match="Hydra multirun .* cannot be combined with a multi-process trainer"):
            refuse_multirun_with_ddp(cfg)
        refuse_multirun_with_ddp(compose_train("trainer=cpu"))  # single process: sweeping is fine
    finally:
        HydraConfig.instance().cfg = None
