"""Text in, text out: streamed text is byte-exact, stop strings cut at the character, an infilling prompt is laid
out exactly as training lays out a FIM segment, and a trained checkpoint carries its tokenizer."""

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from santacoder import GPT, LLM, ConfigError, GPTConfig, load, load_tokenizer
from santacoder.inference.completion import complete, infill, infill_prompt, stream_generate
from santacoder.text.fim import fim_segment


class Scripted(GPT):
    """A model whose next token is read from a script, whatever the input: text-level logic tested exactly."""

    def __init__(self, vocab_size: int, script: list[int], prompt_len: int):
        super().__init__(GPTConfig(vocab_size=vocab_size, n_positions=256, n_embd=8, n_layer=1, n_head=1))
        self.script, self.prompt_len = script, prompt_len

    def forward(self, input_ids, *, cache=None, last_only=False, **kwargs):
        done = 0 if cache is None else cache.length
        position = done + input_ids.shape[1] - self.prompt_len  # 0 after the prompt, then 1, 2, ...
        if cache is not None:
            cache.advance(input_ids.shape[1])
        logits = torch.full((input_ids.shape[0], 1, self.config.vocab_size), -1e4)
        logits[:, 0, self.script[min(position, len(self.script) - 1)]] = 0
        return logits


def scripted(tokenizer, text: str, prompt_len: int) -> Scripted:
    return Scripted(len(tokenizer), tokenizer.encode(text) + [tokenizer.eod_id], prompt_len)


def test_streamed_text_is_byte_exact_and_never_splits_a_character(tokenizer):
    text = "def grüße():\n    return '✓ 日本語'\n"
    ids = tokenizer.encode_bytes(text.encode("utf-8"))
    # the tokenizer splits some characters over several tokens: a naive per-token decode would garble them
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)
    prompt = tokenizer.encode("x")
    pieces = list(stream_generate(scripted(tokenizer, text, len(prompt)), tokenizer, prompt, 100))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) and len(pieces) > 1


def test_stop_strings_cut_at_the_character(tokenizer):
    text = "    return a + b\n\ndef other():\n    pass\n"
    prompt = tokenizer.encode("x")
    model = scripted(tokenizer, text, len(prompt))
    assert complete(model, tokenizer, "x", stop=["\ndef"]) == "    return a + b\n"
    assert complete(model, tokenizer, "x", stop=["+ b", "\ndef"]) == "    return a "
    assert complete(model, tokenizer, "x") == text  # ends at <|endoftext|>
    assert complete(model, tokenizer, "x", max_new_tokens=3) == tokenizer.decode(tokenizer.encode(text)[:3])


@pytest.mark.parametrize("mode,spm_rate", [("psm", 0.0), ("spm", 1.0)])
def test_an_infilling_prompt_is_laid_out_as_training_lays_out_a_fim_segment(tokenizer, mode, spm_rate):
    text = "def add(a, b):\n    return a + b\n"
    replay = np.random.default_rng(3)
    replay.random()  # fim_segment's draws: permute or not, the two cut points, then PSM or SPM
    lo, hi = sorted(replay.integers(0, len(text) + 1, size=2).tolist())
    segment = fim_segment(tokenizer.encode(text), tokenizer, np.random.default_rng(3), fim_rate=1.0, spm_rate=spm_rate)
    prompt = infill_prompt(tokenizer, text[:lo], text[hi:], mode)
    assert segment[: len(prompt)] == prompt  # training's segment = this prompt + the middle
    assert tokenizer.decode(segment[len(prompt) :]) == text[lo:hi]
    with pytest.raises(ValueError, match="mode='xyz' must be one of"):
        infill_prompt(tokenizer, "a", "b", "xyz")


def test_infill_returns_the_middle_up_to_end_of_text(tokenizer):
    prompt = infill_prompt(tokenizer, "def f():\n", "\n", "psm")
    model = scripted(tokenizer, "    return 1", len(prompt))
    assert infill(model, tokenizer, "def f():\n", "\n") == "    return 1"


@pytest.mark.integration
def test_a_trained_run_is_self_contained(compose_train, corpus_dir, tmp_path):
    """After training, the run directory alone gives the model and its tokenizer (no data cache needed)."""
    import shutil

    import run_overrides
    from santacoder.training.task import train

    cfg = compose_train(
        *run_overrides.data(corpus_dir, seq_len=32, batch_size=4),
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=32),
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
    )
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")  # a cache of its own, deleted below
    train(cfg)
    shutil.rmtree(cfg.paths.data_dir)  # the tokenizer's cached file is gone
    run = cfg.paths.output_dir
    tok = load_tokenizer(run)
    assert len(tok) == 512 and tok.decode(tok.encode("def f(): pass")) == "def f(): pass"
    model = load(run)
    assert model.config.n_layer == 2
    assert load_tokenizer(f"{run}/checkpoints/last.ckpt").fingerprint() == tok.fingerprint()


@pytest.fixture()
def saved_model(tokenizer, tmp_path):
    """A small random model saved as a checkpoint that carries its tokenizer."""
    from santacoder.checkpoints.layouts.project import save_checkpoint

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, n_positions=48, n_embd=32, n_layer=2, n_head=4)).eval()
    return model, save_checkpoint(model, tmp_path / "model.ckpt", tokenizer=tokenizer)


def test_cli_generate_and_infill_stream_what_the_python_functions_return(saved_model, tokenizer, tmp_path, capsys):
    from santacoder.cli import main

    model, path = saved_model
    assert main(["generate", str(path), "--prompt", "def add(a, b):", "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == complete(model, tokenizer, "def add(a, b):", max_new_tokens=6) + "\n"
    source = tmp_path / "f.py"
    source.write_text("def add(a, b):\n    <FILL-HERE>\n")
    assert main(["infill", str(path), "--file", str(source), "--max-new-tokens", "5", "--mode", "spm"]) == 0
    expected = infill(model, tokenizer, "def add(a, b):\n    ", "\n", mode="spm", max_new_tokens=5)
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize(
    "text,message",
    [
        ("def f():\n    pass\n", "exactly one <FILL-HERE> marker where the middle goes; it holds 0"),
        ("<FILL-HERE> x <FILL-HERE>", "exactly one <FILL-HERE> marker where the middle goes; it holds 2"),
        ("x = 1  # " * 40 + "<FILL-HERE>", "is more than the model's context of 48 tokens"),
    ],
)
def test_cli_infill_bad_input_gets_one_line(saved_model, tmp_path, capsys, text, message):
    import re

    from santacoder.cli import main

    source = tmp_path / "f.py"
    source.write_text(text)
    assert main(["infill", str(saved_model[1]), "--file", str(source), "--max-new-tokens", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


@pytest.mark.integration
def test_a_model_that_knows_its_functions_gives_them_back_through_infill_and_complete(memorised):
    """Positive control: a tiny model trained until it knows four functions returns a line cut out of one at
    inference time (PSM and SPM prompts), and the body after its signature and docstring."""
    model, tokenizer = memorised.model, memorised.tokenizer
    problem = memorised.problems[1]  # HumanEval/13: gcd in three lines
    assert problem["canonical_solution"] == "    while b:\n        a, b = b, a % b\n    return a\n"
    text = problem["prompt"] + problem["canonical_solution"]
    lo = text.index("        a, b = b, a % b")
    hi = text.index("\n", lo)
    for mode in ("psm", "spm"):
        assert infill(model, tokenizer, text[:lo], text[hi:], mode=mode, max_new_tokens=24) == text[lo:hi]
    prompt = problem["prompt"].strip()  # trained on whole files: its text ends before the newline, as the harness's
    assert complete(model, tokenizer, prompt, max_new_tokens=48) == "\n" + problem["canonical_solution"]
    llm = LLM(model, tokenizer)  # the same through the facade
    assert llm.infill(text[:lo], text[hi:], max_new_tokens=24, stop=["\n"]) == "        a, b = b, a % b"
    assert "".join(llm.stream(prompt, max_new_tokens=48)) == "\n" + problem["canonical_solution"]


def test_an_infilling_prompt_too_long_for_the_context_keeps_the_code_nearest_the_gap(tokenizer):
    prefix, suffix = "x = 1\n" * 50, "y = 2\n" * 50
    full = infill_prompt(tokenizer, prefix, suffix)
    short = infill_prompt(tokenizer, prefix, suffix, max_tokens=43)
    assert len(short) == 43 < len(full)
    p, s = tokenizer.encode(prefix), tokenizer.encode(suffix)
    assert short == [tokenizer.fim_prefix_id, *p[-20:], tokenizer.fim_suffix_id, *s[:20], tokenizer.fim_middle_id]
    lopsided = infill_prompt(tokenizer, "z = 3\n", suffix, max_tokens=43)  # the suffix gets the prefix's spare room
    assert lopsided[-2] != tokenizer.fim_suffix_id and len(lopsided) == 43
    assert infill_prompt(tokenizer, prefix, suffix, max_tokens=10_000) == full


def test_llm_refuses_a_tokenizer_larger_than_the_models_vocabulary(tokenizer):
    small = GPT(GPTConfig(vocab_size=256, n_positions=16, n_embd=8, n_layer=1, n_head=1))
    with pytest.raises(ConfigError, match="has 512 tokens but the model's vocab_size is 256"):
        LLM(small, tokenizer)
    llm = LLM(GPT(GPTConfig(vocab_size=512, n_positions=16, n_embd=8, n_layer=1, n_head=1)), tokenizer)
    assert repr(llm) == "LLM(5,112 parameters, 1 layers x 8, multi-query, 512 tokens, on cpu)"
