"""The ``santacoder`` command: ``info`` on every layout, ``convert`` to transformers and to this project, and
what a user sees for bad values and Ctrl-C: one line, a non-zero status, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
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
from santacoder import GPT, GPTConfig
from santacoder.checkpoints.layouts.project import save_checkpoint
from santacoder.checkpoints.loading import load
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.cli import main
from santacoder.errors import ConfigError
from santacoder.inference.completion import check_prompt_size, complete, infill
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


# ---- bad values and Ctrl-C: one line, a non-zero status, no traceback ----

N_POSITIONS = 64  # the small model's context: prompts of more than 64 * 32 = 2048 bytes are refused before tokenizing


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, tokenizer) -> Path:
    """A tiny random model carrying its tokenizer, as ``santacoder generate`` reads it."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, n_positions=N_POSITIONS, n_embd=32, n_layer=1, n_head=2)).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("small") / "model.ckpt", tokenizer=tokenizer)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]  # argparse's usage lines come first; the error is the last


def refused_by_argparse(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    return one_error_line(capsys)


@pytest.mark.parametrize(
    "option,value,requirement",
    [
        ("--temperature", "nan", "a finite number >= 0 (0: greedy)"),
        ("--temperature", "inf", "a finite number >= 0 (0: greedy)"),
        ("--temperature", "-1", "a finite number >= 0 (0: greedy)"),
        ("--top-p", "0", "a number in (0, 1], e.g. 0.95"),
        ("--top-p", "1.5", "a number in (0, 1], e.g. 0.95"),
        ("--top-p", "nan", "a number in (0, 1], e.g. 0.95"),
        ("--top-k", "0", "a whole number >= 1"),
        ("--max-new-tokens", "0", "a whole number >= 1"),
        ("--max-new-tokens", "many", "a whole number >= 1"),
        ("--seed", "-1", "a whole number from 0 to 2**64 - 1"),
        ("--device", "bogus", "a device: use cpu, cuda, cuda:N or mps"),
    ],
)
def test_a_bad_sampling_value_or_device_is_one_line_before_the_model_is_looked_for(option, value, requirement,
                                                                                   tmp_path, capsys):  # fmt: skip
    line = refused_by_argparse(["generate", str(tmp_path / "absent"), "--prompt", "x", option, value], capsys)
    assert line == f"santacoder generate: error: argument {option}: {value!r} is not {requirement}"


def test_a_prompt_of_invalid_utf8_is_one_line(tmp_path, capsys):
    bad = b"def f(\xff".decode("utf-8", "surrogateescape")  # how Python hands over a terminal's invalid UTF-8
    line = refused_by_argparse(["generate", str(tmp_path / "m"), "--prompt", bad], capsys)
    assert (
        line == "santacoder generate: error: argument --prompt: the text is not valid UTF-8; pass it in a UTF-8 --file"
    )


def test_a_cuda_device_this_machine_lacks_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = refused_by_argparse(["generate", str(tmp_path / "m"), "--prompt", "x", "--device", "cuda"], capsys)
    assert line == (
        "santacoder generate: error: argument --device: 'cuda': torch finds no CUDA GPU on this machine; "
        "use --device cpu"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    line = refused_by_argparse(["infill", str(tmp_path / "m"), "--prefix", "x", "--device", "cuda:2"], capsys)
    assert (
        line
        == "santacoder infill: error: argument --device: 'cuda:2': this machine has 2 CUDA GPU(s), cuda:0 to cuda:1"
    )


def test_max_new_tokens_must_leave_room_for_the_prompt_and_both_numbers_are_said(small_model, tokenizer, capsys):
    # more than the context on its own: refused from the config, before the weights and the tokenizer are read
    assert main(["generate", str(small_model), "--prompt", "x", "--max-new-tokens", "64"]) == 2
    assert one_error_line(capsys) == (
        "santacoder generate: error: --max-new-tokens 64 leaves no room for the prompt in the model's context of "
        "64 tokens (n_positions); ask for at most 63"
    )
    prompt = "x = 1\n" * 8
    n = len(tokenizer.encode(prompt))
    assert main(["generate", str(small_model), "--prompt", prompt, "--max-new-tokens", "60"]) == 2
    assert one_error_line(capsys) == (
        f"santacoder generate: error: the prompt is {n} tokens and --max-new-tokens is 60: {n + 60} is more than the "
        f"model's context of 64 tokens (n_positions); ask for at most {64 - n}"
    )


def test_a_missing_model_is_named_as_the_model_not_as_a_tokenizer(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "dir"
    for extra in ([], ["--tokenizer", str(tmp_path / "tokenizer.json")]):
        assert main(["generate", str(missing), "--prompt", "x", *extra]) == 2
        line = one_error_line(capsys)
        assert line.startswith(f"santacoder generate: error: checkpoint path '{missing}' does not exist; pass a .ckpt")
        assert "tokenizer" not in line


def never(*args, **kwargs):
    raise AssertionError("called, though the input was refused before")


def test_a_prompt_too_long_in_bytes_is_refused_before_tokenizing(small_model, tmp_path, monkeypatch, capsys):
    check_prompt_size(N_POSITIONS, "x" * 2048)  # the bound itself passes
    with pytest.raises(ConfigError, match="2,050 bytes"):  # bytes, not characters
        check_prompt_size(N_POSITIONS, "é" * 1025)
    monkeypatch.setattr("santacoder.cli.load_tokenizer", never)
    monkeypatch.setattr("santacoder.cli.load", never)
    bound = "a model with a context of 64 tokens reads at most 2,048 (32 bytes a token, far more than code averages)"
    (tmp_path / "big.py").write_text("x = 1\n" * 2_000_000)  # 12 MB: tokenizing it took seconds and gigabytes
    start = time.perf_counter()
    assert main(["generate", str(small_model), "--file", str(tmp_path / "big.py"), "--max-new-tokens", "8"]) == 2
    assert one_error_line(capsys) == f"santacoder generate: error: the prompt is 12,000,000 bytes; {bound}: shorten it"
    assert time.perf_counter() - start < 5
    # infill: the prefix and the suffix together
    assert (
        main(["infill", str(small_model), "--prefix", "a" * 1500, "--suffix", "b" * 1500, "--max-new-tokens", "8"]) == 2
    )
    assert one_error_line(capsys) == f"santacoder infill: error: the prompt is 3,000 bytes; {bound}: shorten it"


def test_converting_onto_a_file_or_under_one_is_one_line_and_writes_nothing(small_model, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    for to, out, extra in [
        ("hf", a_file, []),
        ("hf", a_file, ["--force"]),
        ("hf", a_file / "sub", []),
        ("ckpt", a_file / "x.ckpt", []),
        ("ckpt", a_file / "deeper" / "x.ckpt", []),
    ]:
        assert main(["convert", "--to", to, str(small_model), str(out), *extra]) == 2
        assert one_error_line(capsys) == (
            f"santacoder convert: error: cannot write the output '{out}': '{a_file}' is a file, not a directory; "
            "pass another path"
        )
    assert a_file.read_text() == "keep me"


def test_an_output_that_cannot_be_written_is_one_line(small_model, tmp_path, monkeypatch, capsys):
    def denied(*args, **kwargs):  # what a read-only directory gives (tests may run as root, who may write anywhere)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro" / "model.safetensors"))

    monkeypatch.setattr("santacoder.cli.convert", denied)
    assert main(["convert", "--to", "hf", str(small_model), str(tmp_path / "ro")]) == 2
    assert one_error_line(capsys) == (
        f"santacoder convert: error: cannot convert '{small_model}' to '{tmp_path / 'ro'}': Permission denied: "
        f"'{tmp_path / 'ro' / 'model.safetensors'}'"
    )


@pytest.mark.parametrize("command", ["info", "convert"])
def test_ctrl_c_in_info_or_convert_is_one_line_and_status_130(small_model, tmp_path, monkeypatch, capsys, command):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"santacoder.cli.{'inspect_checkpoint' if command == 'info' else 'convert'}", interrupted)
    argv = (
        ["info", str(small_model)] if command == "info" else ["convert", "--to", "hf", str(small_model), str(tmp_path)]
    )
    assert main(argv) == 130
    assert capsys.readouterr().err == f"santacoder {command}: interrupted\n"


# The child: SIGINT raises KeyboardInterrupt as in a terminal, even where the test runner's parent ignores SIGINT
# (a background job), which a child would inherit; each piece of text is slowed down so that Ctrl-C lands mid-stream.
SLOW_CLI = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import santacoder.cli as cli
stream = cli.stream_generate
def slowly(*args, **kwargs):
    for piece in stream(*args, **kwargs):
        yield piece
        time.sleep(0.2)
cli.stream_generate = slowly
sys.exit(cli.main(sys.argv[1:]))
"""


PREFIX, SUFFIX = "def add(a, b):\n", "\n"


@pytest.mark.parametrize(
    "command,args",
    [("generate", ["--prompt", PREFIX]), ("infill", ["--prefix", PREFIX, "--suffix", SUFFIX])],
)
def test_ctrl_c_while_streaming_keeps_the_text_and_ends_with_one_line(small_model, tokenizer, command, args):
    model = load(small_model)
    if command == "generate":
        whole = complete(model, tokenizer, PREFIX, max_new_tokens=40)
    else:
        whole = infill(model, tokenizer, PREFIX, SUFFIX, max_new_tokens=40)
    assert len(whole) > 5  # the model writes on for several pieces: Ctrl-C lands in the middle
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, command, str(small_model), *args, "--max-new-tokens", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip
    try:
        first = child.stdout.read1(1)  # the first text has arrived: interrupt as Ctrl-C does, the whole group
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    streamed = (first + out).decode("utf-8")
    assert child.returncode == 130
    assert err.decode() == f"santacoder {command}: interrupted\n"
    assert streamed.endswith("\n") and 0 < len(streamed) - 1 < len(whole) and whole.startswith(streamed[:-1])
