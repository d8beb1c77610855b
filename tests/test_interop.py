"""Checkpoint interop: parity with transformers' GPTBigCode, Megatron-LM and original-santacoder layouts.

The layouts are written by tests/layouts.py from the public descriptions of each format -- transformers'
``modeling_gpt_bigcode.py`` / ``GPTBigCodeConfig``, bigcode-project/Megatron-LM ``megatron/checkpointing.py``
and ``model/transformer.py``, and the bigcode/santacoder upload's ``GPT2LMHeadCustomModel`` -- from tiny random
transformers models, independently of the readers under test; nothing is downloaded. Weights are rounded to
fp16-representable values so that the fp16 Megatron files hold exactly the same model and every comparison
can be at 1e-5 in fp32.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTBigCodeForCausalLM

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from layouts import (
    ATOL,
    ROUND_TRIP_VOCAB,
    TINY,
    assert_parity,
    fp16_exact,
    hf_logits,
    hf_state,
    input_ids,
    make_hf_model,
    our_logits,
    write_megatron,
    write_santacoder,
)
from santacoder import GPT, GPTConfig
from santacoder.checkpoints.layouts.project import save_checkpoint
from santacoder.checkpoints.loading import convert, inspect_checkpoint, load, read_checkpoint_config, save_hf
from santacoder.checkpoints.safe_load import safe_torch_load
from santacoder.errors import ConfigError
from santacoder.text.tokenizer import train_tokenizer

# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["mqa", "mha"])
def hf_model(request) -> GPTBigCodeForCausalLM:
    return make_hf_model(multi_query=request.param, seed=int(request.param))


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("gpt_bigcode")
    hf_model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def mqa_model() -> GPTBigCodeForCausalLM:
    return make_hf_model(multi_query=True, seed=3)


@pytest.fixture(scope="module")
def small_tokenizer():
    text = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n" * 20
    return train_tokenizer([text], vocab_size=ROUND_TRIP_VOCAB, min_frequency=1)


def expected_config(hf: GPTBigCodeForCausalLM) -> dict:
    c = hf.config
    return dict(
        vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        inner_dim=c.n_inner, multi_query=c.multi_query,
    )  # fmt: skip


def shape_of(config: GPTConfig) -> dict:
    return dict(
        vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, inner_dim=config.inner_dim, multi_query=config.multi_query,
    )  # fmt: skip


# --- parity ----------------------------------------------------------------------------------------------


def test_gpt_bigcode_directory_matches_transformers(hf_model, hf_dir):
    model = load(hf_dir)
    assert_parity(model, hf_model)
    assert shape_of(model.config) == expected_config(hf_model)
    assert model.config.embd_pdrop == model.config.attn_pdrop == model.config.resid_pdrop == 0.0
    assert shape_of(read_checkpoint_config(hf_dir)) == expected_config(hf_model)
    assert load(hf_dir / "config.json").config == model.config  # a file inside the directory stands for it


def test_gpt_bigcode_bin_and_sharded(mqa_model, tmp_path):
    state = hf_state(mqa_model)
    bin_dir = tmp_path / "bin"
    mqa_model.config.save_pretrained(bin_dir)
    torch.save(state, bin_dir / "pytorch_model.bin")  # lm_head included: tied, so it must equal wte
    assert_parity(load(bin_dir), mqa_model)

    sharded = tmp_path / "sharded"
    mqa_model.config.save_pretrained(sharded)
    names = sorted(k for k in state if k != "lm_head.weight")
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: state[k].contiguous() for k in keys}, sharded / file, {"format": "pt"})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_parity(load(sharded), mqa_model)


def test_megatron_matches_transformers(hf_model, tmp_path):
    root = write_megatron(hf_model, tmp_path / "save")
    model = load(root)  # save directory -> tracker -> iter_0000010 -> mp_rank_00/model_optim_rng.pt
    assert_parity(model, hf_model)
    assert shape_of(model.config) == expected_config(hf_model)
    assert (model.config.layer_norm_epsilon, model.config.initializer_range) == (1e-5, 0.022)
    for path in (root / "iter_0000010", root / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt"):
        assert shape_of(read_checkpoint_config(path)) == expected_config(hf_model)
    info = inspect_checkpoint(root)
    assert (info.layout, info.dtype) == ("megatron", torch.float16)
    assert info.num_params == sum(p.numel() for p in hf_model.parameters())


@pytest.mark.parametrize("version", [0.0, 1.0])
def test_megatron_mha_old_checkpoint_versions(tmp_path, version):
    """Before version 2, MHA query_key_value rows were ordered (3, heads, hd) or (heads, hd, 3)."""
    hf = make_hf_model(multi_query=False, seed=4)
    assert_parity(load(write_megatron(hf, tmp_path / "save", version=version)), hf)


def test_megatron_without_args_infers_shape_from_tensors(mqa_model, tmp_path):
    root = write_megatron(mqa_model, tmp_path / "save", with_args=False)
    assert shape_of(read_checkpoint_config(root)) == expected_config(mqa_model)
    assert_parity(load(root), mqa_model)


def test_megatron_renamed_file_and_release_directory(mqa_model, tmp_path):
    root = write_megatron(mqa_model, tmp_path / "save")
    renamed = tmp_path / "santacoder-megatron.pt"
    (root / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt").rename(renamed)
    assert_parity(load(renamed), mqa_model)  # recognised by the Megatron args its pickle holds

    release = tmp_path / "release_save"
    (release / "release" / "mp_rank_00").mkdir(parents=True)
    (release / "latest_checkpointed_iteration.txt").write_text("release\n")
    renamed.rename(release / "release" / "mp_rank_00" / "model_rng.pt")  # the distributed-optimizer name
    assert_parity(load(release), mqa_model)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_original_santacoder_matches_transformers(mqa_model, tmp_path, fmt):
    directory = write_santacoder(mqa_model, tmp_path / "santacoder", fmt)
    model = load(directory)
    assert_parity(model, mqa_model)
    assert shape_of(model.config) == expected_config(mqa_model)
    assert inspect_checkpoint(directory).layout == "santacoder"


def test_load_dtype_and_device(mqa_model, hf_dir):
    model = load(hf_dir, device="cpu", dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert model.lm_head.weight is model.transformer.wte.weight
    assert load(hf_dir, dtype="bfloat16").transformer.wte.weight.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        load(hf_dir, dtype="int8")


# --- export ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
def test_save_hf_round_trip(tmp_path, multi_query, small_tokenizer):
    torch.manual_seed(0)
    shape = {**TINY, "vocab_size": ROUND_TRIP_VOCAB}
    ours = GPT(GPTConfig(**shape, multi_query=multi_query, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))
    fp16_exact(ours, seed=5)
    ours.eval()
    out = save_hf(ours, tmp_path / "hf", tokenizer=small_tokenizer)

    theirs = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(theirs).__name__ == "GPTBigCodeForCausalLM"
    ids = input_ids()
    torch.testing.assert_close(hf_logits(theirs, ids), our_logits(ours, ids), atol=ATOL, rtol=0)

    back = load(out)  # and back: the same model
    assert back.config == ours.config
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"
    assert {"<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"} <= set(tokenizer.all_special_tokens)
    prompt = "<fim-prefix>def add(a, b):<fim-suffix>\n<fim-middle>"
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == small_tokenizer.fim_prefix_id and ids[-1] == small_tokenizer.fim_middle_id
    assert tokenizer.decode(ids) == prompt
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == small_tokenizer.eod_id


def test_convert_to_lightning_checkpoint(mqa_model, tmp_path):
    from santacoder.training.module import SantaCoderLitModule

    root = write_megatron(mqa_model, tmp_path / "save")
    ckpt = convert(root, f"{tmp_path / 'out'}/", to="ckpt")  # a directory: out/model.ckpt
    assert ckpt == tmp_path / "out" / "model.ckpt"
    module = SantaCoderLitModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert_parity(module.model.eval().float(), mqa_model)
    info = inspect_checkpoint(ckpt)
    assert (info.layout, info.dtype) == ("lightning", torch.float16)  # convert keeps the stored dtype
    assert_parity(load(ckpt), mqa_model)


def test_trainer_checkpoint_loads_weights_only(tmp_path):
    import lightning as L

    from santacoder.training.module import SantaCoderLitModule

    config = dict(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, multi_query=True)
    module = SantaCoderLitModule(config, **run_overrides.training_options())
    batches = [{"input_ids": torch.randint(0, 64, (2, 8)), "labels": torch.randint(0, 64, (2, 8))}] * 2
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    model = load(tmp_path / "last.ckpt")
    ids = torch.randint(0, 64, (1, 8))
    torch.testing.assert_close(our_logits(model, ids), our_logits(module.model.eval(), ids), atol=0, rtol=0)
    assert read_checkpoint_config(tmp_path / "last.ckpt") == GPTConfig(**config)

    again = save_checkpoint(model, tmp_path / "again.ckpt")
    torch.testing.assert_close(our_logits(load(again), ids), our_logits(model, ids), atol=0, rtol=0)


# --- refusals --------------------------------------------------------------------------------------------


def test_paths_that_are_not_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello, not a checkpoint\n")
    with pytest.raises(ConfigError, match="not a checkpoint written by torch.save"):
        load(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json and no Megatron"):
        load(tmp_path / "empty")
    torch.save({"transformer.wte.weight": torch.zeros(2, 2)}, tmp_path / "state_dict.pt")
    with pytest.raises(ConfigError, match="not a Lightning checkpoint.*bare state dict"):
        load(tmp_path / "state_dict.pt")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["Llama"]}))
    with pytest.raises(ConfigError, match="neither transformers' GPTBigCode nor the original santacoder"):
        load(tmp_path / "gpt2")


def test_truncated_files(mqa_model, hf_dir, tmp_path):
    root = write_megatron(mqa_model, tmp_path / "save")
    file = root / "iter_0000010" / "mp_rank_00" / "model_optim_rng.pt"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(ConfigError, match="truncated"):
        load(root)

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    weights = (hf_dir / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ConfigError, match="truncated"):
        load(cut)


def test_shape_that_disagrees_with_config(hf_dir, tmp_path):
    config = json.loads((hf_dir / "config.json").read_text())
    config["n_inner"] += 4
    (tmp_path / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"mlp\.c_fc\.weight has shape .* disagree"):
        load(tmp_path)


def test_megatron_args_that_disagree_with_tensors(mqa_model, tmp_path):
    root = write_megatron(mqa_model, tmp_path / "save", hidden_size=TINY["n_embd"] + 5)
    with pytest.raises(ConfigError, match="disagree"):
        load(root)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation_function": "gelu"}, "activation_function='gelu'"),
        ({"scale_attn_weights": False}, "scale_attn_weights"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"n_head": 7}, "divisible"),
    ],
)
def test_unsupported_gpt_bigcode_configs(hf_dir, tmp_path, change, message):
    config = {**json.loads((hf_dir / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match=message):
        load(tmp_path)


def test_untied_lm_head_is_refused(mqa_model, tmp_path):
    mqa_model.config.save_pretrained(tmp_path)
    state = hf_state(mqa_model)
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="untied"):
        load(tmp_path)


class _RunsCode:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("name", ["model_optim_rng.pt", "last.ckpt", "pytorch_model.bin"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "subprocess.call"])
def test_pickle_asking_for_code_is_refused(mqa_model, tmp_path, name, payload):
    flag = tmp_path / "pwned"
    code = f"open({str(flag)!r}, 'w').close()"  # creates the flag file
    evil = {
        "os.system": _RunsCode(os.system, f'{sys.executable} -c "{code}"'),
        "builtins.exec": _RunsCode(builtins.exec, code),
        "subprocess.call": _RunsCode(subprocess.call, [sys.executable, "-c", code]),
    }[payload]
    if name == "pytorch_model.bin":
        target = tmp_path / "hf" / name
        mqa_model.config.save_pretrained(target.parent)
        content = {**hf_state(mqa_model), "transformer.wte.weight": evil}
    else:
        target = tmp_path / name
        content = {"state_dict": {}, "hyper_parameters": {"config": {}}, "args": argparse.Namespace(), "x": evil}
    torch.save(content, target)
    with pytest.raises(ConfigError, match="refusing to load"):
        load(target)
    with pytest.raises(ConfigError, match="refusing to load"):
        inspect_checkpoint(target)
    assert not flag.exists()
    # Control: the payload is live, an unrestricted load runs it (so the assertion above can fail).
    torch.load(target, weights_only=False)
    assert flag.exists()


def test_megatron_globals_are_inert_placeholders(tmp_path):
    """A ``megatron.*`` global is replaced, never imported or called, even if the name hides a function."""
    flag = tmp_path / "pwned"

    def system(*args):  # stands for a hostile function published under a megatron.* name
        flag.write_text("ran")

    system.__module__, system.__qualname__ = "megatron.evil", "system"
    sys.modules["megatron"], sys.modules["megatron.evil"] = types.ModuleType("megatron"), types.ModuleType("m.e")
    sys.modules["megatron.evil"].system = system
    try:
        torch.save({"args": argparse.Namespace(hidden_size=8), "x": _RunsCode(system, "echo hi")}, tmp_path / "m.pt")
    finally:
        del sys.modules["megatron"], sys.modules["megatron.evil"]
    loaded = safe_torch_load(tmp_path / "m.pt", allow_megatron=True)
    assert loaded["args"].hidden_size == 8
    assert loaded["x"].args == ("echo hi",) and "megatron.evil.system" in repr(loaded["x"])
    assert not flag.exists()
    with pytest.raises(ConfigError, match="refusing to load"):  # outside Megatron files, not even placeholders
        safe_torch_load(tmp_path / "m.pt")
