"""What users hold from before the package was arranged in layers still works: a run directory and checkpoints
written by commit 7c63784 (tests/data/legacy_run, made by its make.sh) load with the same logits, resume to the
same weights (through today's configs, and through the run's own saved config, whose `_target_`s name the old
module paths), and evaluate to the same numbers as that commit's eval.py."""

import importlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from hydra.utils import get_object
from omegaconf import OmegaConf, open_dict

import santacoder
from santacoder.checkpoints.storage import read_checkpoint as read_checkpoint_now
from santacoder.conf import build as build_now
from santacoder.evaluation.task import evaluate
from santacoder.training.task import train

FIXTURE = Path(__file__).resolve().parent / "data" / "legacy_run"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text())
# the fixture's data and model settings (make.sh), with its corpus and tokenizer where they are now
DATA = {
    "data.source": str(FIXTURE / "corpus.jsonl"),
    "data.tokenizer": str(FIXTURE / "tokenizer.json"),
    "data.seq_len": "32",
    "data.batch_size": "4",
    "data.num_workers": "0",
    "data.val_fraction": "0.2",
}
MODEL = ["model.config.n_layer=1", "model.config.n_embd=32", "model.config.n_head=2", "model.config.n_inner=64",
         "model.config.n_positions=64"]  # fmt: skip
TRAINER = ["trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.limit_val_batches=4",
           "callbacks.run_checkpoint.every_n_train_steps=3"]  # fmt: skip


@pytest.fixture()
def old_run(tmp_path) -> Path:
    """A copy of the old run directory, as a user would still have it."""
    return Path(shutil.copytree(FIXTURE / "run", tmp_path / "old_run"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(got: Path, expected: Path) -> None:
    a, b = weights(got), weights(expected)
    assert a.keys() == b.keys()
    for name in a:  # bitwise on the machine that wrote the fixture; another CPU's rounding stays below 1e-6
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_an_old_run_loads_with_the_same_logits_and_infills_the_same(old_run):
    llm = santacoder.LLM.load(old_run)
    ids = llm.tokenizer.encode(REFERENCE["text"])
    assert ids == REFERENCE["ids"]
    with torch.no_grad():
        logits = llm.model(torch.tensor([ids]))[0]
    # stored to 6 decimals
    torch.testing.assert_close(logits[:, :8], torch.tensor(REFERENCE["logits_first8"]), rtol=0, atol=2e-6)
    torch.testing.assert_close(logits.logsumexp(-1), torch.tensor(REFERENCE["logsumexp"]), rtol=0, atol=2e-6)
    assert llm.infill("def f(x):\n    ", "\n    return y\n", max_new_tokens=8) == REFERENCE["greedy_infill"]


def test_every_target_of_the_old_saved_config_still_names_the_same_object(old_run):
    saved = OmegaConf.to_container(OmegaConf.load(old_run / ".hydra" / "config.yaml"))
    targets = []

    def collect(node):
        if isinstance(node, dict):
            targets.extend(v for k, v in node.items() if k in ("_target_", "wrap_block"))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(saved)
    old = sorted(t for t in targets if t.startswith("santacoder.") and not t.startswith("santacoder.data."))
    assert old == sorted({
        "santacoder.lit_module.SantaCoderLitModule", "santacoder.lit_module.warmup_cosine_schedule",
        "santacoder.run_checkpoint.RunCheckpoint", "santacoder.callbacks.NonFiniteLossGuard",
        "santacoder.throughput.SantaCoderThroughputMonitor", "santacoder.callbacks.LossScaleMonitor",
        "santacoder.checkpoint_io.AtomicCheckpointIO",
    })  # fmt: skip
    now = {
        "santacoder.lit_module.SantaCoderLitModule": "santacoder.training.module.SantaCoderLitModule",
        "santacoder.lit_module.warmup_cosine_schedule": "santacoder.training.module.warmup_cosine_schedule",
        "santacoder.run_checkpoint.RunCheckpoint": "santacoder.training.callbacks.RunCheckpoint",
        "santacoder.callbacks.NonFiniteLossGuard": "santacoder.training.callbacks.NonFiniteLossGuard",
        "santacoder.throughput.SantaCoderThroughputMonitor": (
            "santacoder.training.callbacks.SantaCoderThroughputMonitor"
        ),
        "santacoder.callbacks.LossScaleMonitor": "santacoder.training.callbacks.LossScaleMonitor",
        "santacoder.checkpoint_io.AtomicCheckpointIO": "santacoder.training.checkpoint_io.AtomicCheckpointIO",
    }
    for target in old:
        with pytest.warns(DeprecationWarning, match=f"is now {now[target].rsplit('.', 1)[0]}"):
            assert get_object(target) is get_object(now[target]), target


def test_old_import_paths_of_user_code_still_work():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from santacoder.checkpoint import read_checkpoint
        from santacoder.interop import load
        from santacoder.tokenizer import load_tokenizer
        from santacoder.train import build

    assert (load, load_tokenizer, build) == (santacoder.load, santacoder.load_tokenizer, build_now)
    assert read_checkpoint is read_checkpoint_now
    old_module = importlib.import_module("santacoder.lit_module")
    with pytest.raises(AttributeError, match=r"'santacoder.lit_module' \(now santacoder.training.module\) has no"):
        old_module.Nope  # noqa: B018


def test_an_old_checkpoint_resumes_through_todays_configs_to_the_uninterrupted_weights(compose_train, old_run):
    (old_run / "checkpoints" / "last.ckpt").unlink()  # resume from the step-3 checkpoint, not the end
    cfg = compose_train(
        *(f"{k}={v}" for k, v in DATA.items()), *MODEL, *TRAINER, "resume_with_other_data=true",
        f"ckpt_path={old_run / 'checkpoints' / 'step_000003.ckpt'}", "callbacks.progress_bar.refresh_rate=0",
    )  # fmt: skip
    metrics = train(cfg)
    assert metrics["step"] == 6
    assert_same_weights(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", FIXTURE / "run/checkpoints/last.ckpt")
    old_metrics = json.loads((FIXTURE / "run" / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(old_metrics["val/loss"], rel=1e-6)


def test_an_old_run_resumes_through_its_own_saved_config(old_run, tmp_path):
    """The saved config names the old module paths everywhere (model, scheduler, callbacks, plugins)."""
    (old_run / "checkpoints" / "last.ckpt").unlink()
    cfg = OmegaConf.load(old_run / ".hydra" / "config.yaml")
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(old_run)
        cfg.data.source, cfg.data.tokenizer = DATA["data.source"], DATA["data.tokenizer"]  # the rest is as saved
        cfg.data.cache_dir = str(tmp_path / "cache")
        cfg.resume_with_other_data = True
        cfg.ckpt_path = str(old_run / "checkpoints" / "step_000003.ckpt")
        cfg.extras.print_config = False
        cfg.callbacks.progress_bar.refresh_rate = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        metrics = train(cfg)
    assert metrics["step"] == 6
    assert_same_weights(old_run / "checkpoints" / "last.ckpt", FIXTURE / "run" / "checkpoints" / "last.ckpt")


def test_an_old_run_evaluates_to_the_numbers_of_its_own_eval(old_run, tmp_path):
    overrides = {**DATA, "data.cache_dir": str(tmp_path / "cache")}
    cfg = santacoder.compose(
        [f"ckpt_path={old_run}", *(f"{k}={v}" for k, v in overrides.items()), "tasks.fim_single_line.limit=5",
         "tasks.humaneval.enabled=false", "logger=[]"],
        config_name="eval", output_dir=tmp_path / "eval",
    )  # fmt: skip
    metrics = evaluate(cfg, overrides)
    expected = REFERENCE["eval"]
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key
