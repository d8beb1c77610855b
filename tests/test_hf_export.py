"""The ``save_hf`` export as a complete transformers model: transformers' own defaults (the text-generation
pipeline, ``generate``, a padded batch) work on it and decode what this project decodes, and its files are
readable like any others.

A tiny model with a small context (so that transformers' default lengths would run past it) and random weights
scaled so that greedy decoding has clear winners: the same tokens from both sides, with or without padding.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from layouts import fp16_exact  # tests/layouts.py (pytest puts tests/ on sys.path)
from santacoder import GPT, FIMTokens, GPTConfig, generate, train_tokenizer
from santacoder.checkpoints.loading import save_hf

N_POSITIONS = 64  # the pipeline's default max_new_tokens (256) would run past it
PROMPTS = ["def add(a, b):\n    return", "import json\n\n\nclass Point:\n    def __init__(self, x"]


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    config = GPTConfig(
        vocab_size=len(tokenizer), n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=4,
        embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0,
    )  # fmt: skip
    model = GPT(config)
    fp16_exact(model, seed=7)  # large random weights: peaked logits, no near-ties for greedy decoding to flip
    return model.eval()


@pytest.fixture(scope="module")
def export(model, tokenizer, tmp_path_factory):
    return save_hf(model, tmp_path_factory.mktemp("export") / "hf", tokenizer=tokenizer)


def until_eos(ids: list[int], eos_id: int) -> list[int]:
    """The tokens up to and including the first eos (what follows it is padding)."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


def test_generation_config_holds_the_special_ids_and_the_context(export, tokenizer, model):
    generation = json.loads((export / "generation_config.json").read_text())
    assert generation["bos_token_id"] == generation["eos_token_id"] == tokenizer.eod_id
    assert generation["pad_token_id"] == tokenizer.fim_pad_id
    assert generation["max_length"] == N_POSITIONS
    config = json.loads((export / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        tokenizer.eod_id, tokenizer.eod_id, tokenizer.fim_pad_id,
    )  # fmt: skip
    theirs = AutoTokenizer.from_pretrained(export)
    assert (theirs.pad_token, theirs.pad_token_id) == ("<fim-pad>", tokenizer.fim_pad_id)
    assert theirs.padding_side == "left"


def test_starcoder_token_names_pad_with_fim_pad(model, tmp_path):
    starcoder = train_tokenizer(PROMPTS * 20, vocab_size=263, fim_tokens=FIMTokens.starcoder(), min_frequency=1)
    out = save_hf(model, tmp_path / "hf", tokenizer=starcoder)
    theirs = AutoTokenizer.from_pretrained(out)
    assert (theirs.pad_token, theirs.pad_token_id) == ("<fim_pad>", starcoder.fim_pad_id)
    assert json.loads((out / "generation_config.json").read_text())["pad_token_id"] == starcoder.fim_pad_id


def test_generation_config_without_a_tokenizer(model, tmp_path):
    out = save_hf(model, tmp_path / "hf")
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["max_length"] == N_POSITIONS


def test_default_pipeline_call_stops_at_the_context(export):
    generator = pipeline("text-generation", model=str(export), tokenizer=str(export))
    lengths = []
    generate_with_defaults = generator.model.generate

    def recording(*args, **kwargs):  # the token count itself: decoding random tokens is not reversible text
        out = generate_with_defaults(*args, **kwargs)
        lengths.append(out.shape[-1])
        return out

    generator.model.generate = recording
    torch.manual_seed(0)  # the pipeline samples by default
    result = generator(PROMPTS[0])  # nothing but the prompt: transformers' and the export's defaults
    assert result[0]["generated_text"].startswith(PROMPTS[0])
    # the whole context, not an early eos: the length limit is what stopped it
    assert lengths == [N_POSITIONS]


def test_greedy_pipeline_equals_santacoder_generate(export, model, tokenizer):
    generator = pipeline("text-generation", model=str(export), tokenizer=str(export))
    prompt_ids = tokenizer.encode(PROMPTS[1])
    theirs = generator(PROMPTS[1], do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    ours = generate(model, [prompt_ids], max_new_tokens=N_POSITIONS - len(prompt_ids), eos_id=tokenizer.eod_id)
    assert theirs[: len(prompt_ids)] == prompt_ids
    assert theirs[len(prompt_ids) :] == until_eos(ours[0].tolist(), tokenizer.eod_id)


def test_padded_batch_decodes_each_prompt_as_alone(export, model, tokenizer):
    hf_tokenizer = AutoTokenizer.from_pretrained(export)
    hf_model = AutoModelForCausalLM.from_pretrained(export).eval()
    batch = hf_tokenizer(PROMPTS, padding=True, return_tensors="pt")  # the export's pad token and side
    assert batch["attention_mask"].min() == 0  # the prompts differ in length: one row is padded
    new = 16
    with torch.no_grad():
        batched = hf_model.generate(**batch, do_sample=False, max_new_tokens=new)[:, batch["input_ids"].shape[1] :]
    for row, prompt in zip(batched.tolist(), PROMPTS, strict=True):
        ids = torch.tensor([tokenizer.encode(prompt)])
        with torch.no_grad():
            alone = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new)
        alone = alone[0, ids.shape[1] :].tolist()
        assert until_eos(row, tokenizer.eod_id) == alone
        assert alone == until_eos(
            generate(model, ids, max_new_tokens=new, eos_id=tokenizer.eod_id)[0].tolist(), tokenizer.eod_id
        )

    generator = pipeline("text-generation", model=str(export), tokenizer=str(export))
    piped = generator(PROMPTS, batch_size=2, do_sample=False, max_new_tokens=new, return_tensors=True)
    for out, row, prompt in zip(piped, batched.tolist(), PROMPTS, strict=True):
        ids = out[0]["generated_token_ids"]
        ids = ids[next(i for i, t in enumerate(ids) if t != tokenizer.fim_pad_id) :]  # the batch's left padding
        prompt_ids = tokenizer.encode(prompt)
        assert ids[: len(prompt_ids)] == prompt_ids
        assert until_eos(ids[len(prompt_ids) :], tokenizer.eod_id) == until_eos(row, tokenizer.eod_id)


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_exported_files_have_the_modes_of_ordinary_files(model, tokenizer, tmp_path, umask):
    previous = os.umask(umask)
    try:
        out = save_hf(model, tmp_path / "hf", tokenizer=tokenizer)
    finally:
        os.umask(previous)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()}
    assert "model.safetensors" in modes and "generation_config.json" in modes
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_an_export_killed_while_writing_the_weights_leaves_the_previous_one_whole(model, tokenizer, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    """Over an existing export, a kill halfway through the weights: every file is the previous one, whole, and no
    temporary file is left (each file is written beside and renamed into place, config.json last)."""
    from santacoder.checkpoints.layouts import hf

    out = save_hf(model, tmp_path / "hf", tokenizer=tokenizer)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = GPT(model.config)  # other weights, other bytes

    def killed_halfway(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(hf, "save_file", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_hf(other, out, tokenizer=tokenizer)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert AutoModelForCausalLM.from_pretrained(out) is not None
