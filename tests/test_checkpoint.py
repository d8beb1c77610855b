"""This project's checkpoint format (santacoder/checkpoint.py): a format version and fields in one place,
runtime choices left out, files written before the format had a version still read, newer ones refused."""

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder import ConfigError, GPTConfig, load, read_checkpoint_config
from santacoder.checkpoints.format import FORMAT_VERSION, read_meta
from santacoder.checkpoints.layouts.project import save_checkpoint
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.training.module import SantaCoderLitModule

# Written by the code of commit 5cb447f (tests/data/write_format0_checkpoint.py): hyper_parameters['config']
# holds attn_impl='xformers' and only the fields it was given; 'wandb_run_id' at the top level; no version.
FORMAT0 = Path(__file__).parent / "data" / "format0.ckpt"
FORMAT0_CONFIG = GPTConfig(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, initializer_range=0.022)


def batches(n: int, vocab: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    data = [{"input_ids": torch.randint(0, vocab, (2, 16), generator=g)} for _ in range(n)]
    return DataLoader([{**b, "labels": b["input_ids"].roll(-1, 1)} for b in data], batch_size=None)


def trainer(tmp_path: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip


def test_a_format0_checkpoint_still_loads_and_runs_here():
    stored = torch.load(FORMAT0, weights_only=True)
    assert "santacoder" not in stored and stored["hyper_parameters"]["config"]["attn_impl"] == "xformers"
    assert read_meta(stored).format_version == 0 and read_meta(stored).wandb_run_id == stored["wandb_run_id"]
    assert read_checkpoint_config(FORMAT0) == FORMAT0_CONFIG  # missing fields read with that time's defaults

    model = load(FORMAT0)  # trained "with xformers": runs on this CPU, with the backend chosen here
    assert model.attn_impl == "auto"
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    weights = {k.removeprefix("model."): v for k, v in stored["state_dict"].items()}
    reference = SantaCoderLitModule(FORMAT0_CONFIG.to_dict(), attn_impl="math").model.eval()
    reference.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(ids), atol=1e-6, rtol=1e-6)


def test_training_resumes_from_a_format0_checkpoint(tmp_path):
    options = {**run_overrides.training_options(), "decay_embeddings": False}  # the groups of that time
    module = SantaCoderLitModule(FORMAT0_CONFIG.to_dict(), **options)
    fit = trainer(tmp_path, max_steps=3)
    fit.fit(module, batches(3), ckpt_path=FORMAT0)
    assert fit.global_step == 3  # two steps restored from the file, one more trained


def test_new_checkpoints_carry_the_version_and_no_runtime_choices(tmp_path):
    module = SantaCoderLitModule(
        FORMAT0_CONFIG.to_dict(), attn_impl="math", activation_checkpointing=True, **run_overrides.training_options()
    )
    fit = trainer(tmp_path, max_steps=1)
    fit.fit(module, batches(1))
    fit.save_checkpoint(tmp_path / "new.ckpt")
    stored = read_checkpoint(tmp_path / "new.ckpt")
    # saved by a bare Trainer (no AtomicCheckpointIO): no checksum recorded
    assert stored["santacoder"] == {"format_version": FORMAT_VERSION, "wandb_run_id": None, "checksum": None,
                                    "val_loss": None, "val_step": None}  # fmt: skip
    assert stored["hyper_parameters"]["config"] == FORMAT0_CONFIG.to_dict()  # every field, no attn_impl
    assert not {"attn_impl", "activation_checkpointing", "compile"} & set(stored["hyper_parameters"])
    rebuilt = SantaCoderLitModule.load_from_checkpoint(tmp_path / "new.ckpt", map_location="cpu", weights_only=True)
    assert rebuilt.model.attn_impl == "auto" and not rebuilt.model.activation_checkpointing

    converted = read_checkpoint(save_checkpoint(load(tmp_path / "new.ckpt"), tmp_path / "converted.ckpt"))
    assert read_meta(converted).format_version == FORMAT_VERSION
    assert read_meta(converted).checksum.startswith("sha256:")


def test_a_newer_format_is_refused(tmp_path):
    stored = torch.load(FORMAT0, weights_only=True)
    stored["santacoder"] = {"format_version": FORMAT_VERSION + 1}
    torch.save(stored, tmp_path / "future.ckpt")
    message = f"format {FORMAT_VERSION + 1}, newer than this santacoder reads .{FORMAT_VERSION}.; upgrade santacoder"
    with pytest.raises(ConfigError, match=message):
        load(tmp_path / "future.ckpt")
    module = SantaCoderLitModule(FORMAT0_CONFIG.to_dict(), **run_overrides.training_options())
    with pytest.raises(ConfigError, match=message):  # resuming refuses it before restoring anything
        trainer(tmp_path, max_steps=3).fit(module, batches(3), ckpt_path=tmp_path / "future.ckpt")
