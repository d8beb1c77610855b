"""The ``santacoder`` command: ``info`` on every layout, ``convert`` to transformers and to this project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from layouts import (  # tests/layouts.py, shared with test_interop.py
    ATOL,
    ROUND_TRIP_VOCAB,
    assert_parity,
    hf_logits,
    input_ids,
    make_hf_model,
    write_megatron,
    write_santacoder,
)
from santacoder.checkpoints.layouts.project import save_checkpoint
from santacoder.checkpoints.loading import load
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.cli import main
from santacoder.text.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict:
    """One tiny model (MQA) in all four layouts, and its transformers twin."""
    root = tmp_path_factory.mktemp("layouts")
    hf = make_hf_model(multi_query=True, seed=7)
    hf.save_pretrained(root / "gpt_bigcode")
    paths = {
        "gpt_bigcode": root / "gpt_bigcode",
        "santacoder": write_santacoder(hf, root / "santacoder"),
        "megatron": write_megatron(hf, root / "megatron"),
        "lightning": save_checkpoint(load(root / "gpt_bigcode"), root / "model.ckpt"),
    }
    return {"hf": hf, "paths": paths, "num_params": sum(p.numel() for p in hf.parameters())}


@pytest.mark.parametrize("layout", ["gpt_bigcode", "santacoder", "megatron", "lightning"])
def test_info_prints_layout_shape_and_parameter_count(layouts, layout, capsys):
    assert main(["info", str(layouts["paths"][layout])]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k.strip(): v.strip() for k, v in lines.items()}
    assert fields["layout"].startswith(layout)
    assert fields["n_layer"] == "2" and fields["n_embd"] == "60" and fields["n_inner"] == "100"
    assert fields["n_head"] == "5 (head_dim 12)" and fields["attention"].startswith("multi-query")
    assert fields["vocab_size"] == "131" and fields["n_positions"] == "37"
    assert fields["parameters"].startswith(f"{layouts['num_params']:,} ")
    assert fields["dtype"] == ("float16" if layout == "megatron" else "float32")
    assert fields["tokenizer"].startswith("none")  # none carried inside, none beside it
    if layout == "lightning":  # written by save_checkpoint: weights, no training state
        assert fields["step"] == "0" and fields["val/loss"].startswith("none recorded")

    assert main(["info", "--json", str(layouts["paths"][layout])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["layout"], info["num_params"], info["config"]["n_head"]) == (layout, layouts["num_params"], 5)


def test_info_of_a_training_checkpoint_gives_its_step_val_loss_and_tokenizer(capsys):
    """What a user asks of a run first: how far it got, how good it was, and whether it is self-contained."""
    run = Path(__file__).resolve().parent / "data" / "legacy_run" / "run"  # a run of commit 7c63784
    assert main(["info", str(run)]) == 0
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in capsys.readouterr().out.splitlines())}
    last = read_checkpoint(run / "checkpoints" / "last.ckpt")
    score = next(v["current_score"] for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert fields["step"] == str(last["global_step"]) == "6"
    assert fields["val/loss"] == f"{float(score):.4f}"
    assert fields["tokenizer"].startswith("carried inside")
    assert main(["info", "--json", str(run / "checkpoints" / "step_000003.ckpt")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == "3" and info["val/loss"].startswith("none recorded")  # saved before the validation


def test_convert_megatron_to_hf_and_ckpt(layouts, tmp_path, capsys):
    tokenizer = train_tokenizer(["def f(x):\n    return x + 1\n" * 10], vocab_size=ROUND_TRIP_VOCAB, min_frequency=1)
    tokenizer.save(tmp_path / "tokenizer.json")
    # The tokenizer belongs to a model with a larger vocabulary: a clear error, nothing half-written.
    args = ["convert", "--to", "hf", str(layouts["paths"]["megatron"]), str(tmp_path / "hf")]
    assert main([*args, "--tokenizer", str(tmp_path / "tokenizer.json")]) == 2
    assert "vocab_size is 131" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()

    assert main([*args, "--dtype", "float32"]) == 0
    assert "no tokenizer written" in capsys.readouterr().err
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = input_ids()
    torch.testing.assert_close(hf_logits(theirs, ids), hf_logits(layouts["hf"], ids), atol=ATOL, rtol=0)

    assert main(["convert", "--to", "ckpt", str(layouts["paths"]["santacoder"]), str(tmp_path / "s.ckpt")]) == 0
    assert main(["info", str(tmp_path / "s.ckpt")]) == 0
    assert "lightning" in capsys.readouterr().out
    assert_parity(load(tmp_path / "s.ckpt"), layouts["hf"])


def test_convert_copies_the_source_tokenizer(tmp_path):
    source = tmp_path / "src"
    make_hf_model(multi_query=True, seed=8, vocab_size=ROUND_TRIP_VOCAB).save_pretrained(source)
    tokenizer = train_tokenizer(["def f(x):\n    return x + 1\n" * 10], vocab_size=ROUND_TRIP_VOCAB, min_frequency=1)
    tokenizer.save(source / "tokenizer.json")

    assert main(["convert", "--to", "hf", str(source), str(tmp_path / "out")]) == 0
    loaded = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert loaded.convert_tokens_to_ids("<fim-suffix>") == tokenizer.fim_suffix_id
    assert loaded.eos_token_id == tokenizer.eod_id
    assert loaded.decode(tokenizer.encode("def f(x):")) == "def f(x):"


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("santacoder info: error:") and "does not exist" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # argparse: --to is required
        main(["convert", "a", "b"])


def test_console_script_runs(layouts):
    result = subprocess.run(
        [sys.executable, "-m", "santacoder.cli", "info", str(layouts["paths"]["megatron"])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "megatron" in result.stdout and f"{layouts['num_params']:,}" in result.stdout


def test_convert_never_overwrites_its_input_and_asks_before_replacing_an_output(layouts, tmp_path, capsys):
    source = layouts["paths"]["santacoder"]
    assert main(["convert", "--to", "ckpt", str(source), str(tmp_path / "a.ckpt")]) == 0
    resumable = tmp_path / "a.ckpt"
    before = resumable.read_bytes()
    # the same file as output: refused even with --force, the file unchanged
    assert main(["convert", "--to", "ckpt", str(resumable), str(resumable), "--force"]) == 2
    assert "is the input" in capsys.readouterr().err and resumable.read_bytes() == before
    # an existing output: refused without --force, replaced with it
    assert main(["convert", "--to", "ckpt", str(source), str(resumable)]) == 2
    err = capsys.readouterr().err
    assert "exists; pass --force" in err and len(err.strip().splitlines()) == 1 and resumable.read_bytes() == before
    assert main(["convert", "--to", "ckpt", str(source), str(resumable), "--force"]) == 0
    # an HF directory converted into itself
    assert main(["convert", "--to", "hf", str(source), str(tmp_path / "hf")]) == 0
    assert main(["convert", "--to", "hf", str(tmp_path / "hf"), str(tmp_path / "hf"), "--force"]) == 2
    assert "is the input" in capsys.readouterr().err
