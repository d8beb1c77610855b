"""Decoding with the KV cache: exactly uncached greedy decoding and transformers' greedy generate on the same
weights; a padded batch equals its rows one by one on every backend; sampling filters on crafted logits; the
cache holds what its formula says."""

import pytest
import torch

from santacoder import GPT, GPTConfig, save_hf
from santacoder.inference.generation import generate, sample_next
from santacoder.model.kv_cache import KVCache


def model_of(multi_query: bool, **overrides) -> GPT:
    torch.manual_seed(0)
    fields = dict(vocab_size=101, n_positions=64, n_embd=40, n_layer=3, n_head=5, n_inner=72, multi_query=multi_query)
    model = GPT(GPTConfig(**{**fields, **overrides}), attn_impl="sdpa").eval()
    with torch.no_grad():  # larger weights than the init's 0.02: logits far apart, so argmax ties cannot hide bugs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def uncached_greedy(model: GPT, prompt: torch.Tensor, n: int) -> torch.Tensor:
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, prompt.shape[1] :]


@pytest.mark.parametrize("multi_query", [True, False])
def test_cached_greedy_decoding_is_uncached_greedy_decoding(multi_query):
    model = model_of(multi_query)
    prompt = torch.randint(0, 101, (2, 7))
    assert torch.equal(generate(model, prompt, 30), uncached_greedy(model, prompt, 30))


@pytest.mark.parametrize("multi_query", [True, False])
def test_greedy_decoding_equals_transformers_generate_on_the_same_weights(multi_query, tmp_path):
    transformers = pytest.importorskip("transformers")
    model = model_of(multi_query)
    save_hf(model, tmp_path / "hf")
    theirs = transformers.GPTBigCodeForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="sdpa").eval()
    prompt = torch.randint(0, 101, (1, 9))
    with torch.no_grad():
        expected = theirs.generate(prompt, max_new_tokens=25, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(generate(model, prompt, 25), expected[:, 9:])


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_a_left_padded_batch_decodes_each_row_as_it_would_alone(impl):
    model = model_of(True).set_attn_impl(impl)
    prompts = [torch.randint(0, 101, (n,)) for n in (3, 11, 6, 1)]
    batch = generate(model, prompts, 15)
    for prompt, row in zip(prompts, batch, strict=True):
        assert torch.equal(row, generate(model, [prompt], 15)[0])
        assert torch.equal(row, uncached_greedy(model, prompt[None], 15)[0])


def test_rows_that_end_are_filled_with_pad_and_decoding_stops_when_all_have():
    model = model_of(True)
    prompts = [torch.randint(0, 101, (n,)) for n in (4, 8)]
    free = generate(model, prompts, 12)  # no eos: every row runs 12 steps
    assert free.shape == (2, 12)
    for eos in {int(t) for t in free[0, :6]}:
        ends = [row.tolist().index(eos) + 1 if eos in row.tolist() else None for row in free]
        length = 12 if None in ends else max(ends)
        expected = free[:, :length].clone()
        for i, end in enumerate(ends):
            if end is not None:
                expected[i, end:] = -1  # the eos is kept, then pad_id
        assert torch.equal(generate(model, prompts, 12, eos_id=eos, pad_id=-1), expected), eos
    filled = generate(model, prompts, 12, eos_id=int(free[0, 0]))  # pad_id defaults to eos_id
    assert (filled[0] == int(free[0, 0])).all()


def test_a_prompt_longer_than_the_context_is_refused_in_one_line():
    model = model_of(True)
    with pytest.raises(ValueError, match=r"the prompt \(60 tokens\) and max_new_tokens=10 need 70 positions; the "
                                         r"model has n_positions=64"):  # fmt: skip
        generate(model, torch.zeros(1, 60, dtype=torch.long), 10)


def test_sampling_filters_on_crafted_logits():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = lambda **kw: {  # noqa: E731
        int(sample_next(logits, generator=torch.Generator().manual_seed(s), **kw)) for s in range(300)
    }
    assert draws(temperature=1.0) == {0, 1, 2, 3}
    assert draws(temperature=1.0, top_k=2) == {0, 1}
    assert draws(temperature=1.0, top_p=0.8) == {0, 1}  # 0.5 < 0.8: the second token is needed, not the third
    assert draws(temperature=1.0, top_p=0.81) == {0, 1, 2}
    assert draws(temperature=1.0, top_p=0.1) == {0}  # the most likely token is always kept
    assert int(sample_next(logits)) == 0  # temperature 0: argmax
    # a low temperature sharpens: the top token's share rises from ~0.5 towards 1
    counts = torch.bincount(
        torch.stack([sample_next(logits.expand(1000, 4), 0.3, generator=torch.Generator().manual_seed(1))]).flatten(),
        minlength=4,
    )
    assert counts[0] > 800
    # the same seed gives the same draws
    a = generate(model_of(True), torch.zeros(2, 3, dtype=torch.long), 10, temperature=0.8, top_p=0.9, seed=7)
    b = generate(model_of(True), torch.zeros(2, 3, dtype=torch.long), 10, temperature=0.8, top_p=0.9, seed=7)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="top_p=1.5 must be in"):
        sample_next(logits, 1.0, top_p=1.5)


def test_the_cache_holds_two_tensors_per_layer_of_one_kv_head():
    config = GPTConfig.from_name("santacoder-1b")
    cache = KVCache(config, batch_size=1, max_len=100, device="meta", dtype=torch.float16)
    per_token = 2 * config.n_layer * 1 * config.head_dim * 2
    assert KVCache.bytes_per_token(config, torch.float16) == per_token == 12 * 1024  # 12 KiB for santacoder-1b
    assert cache.nbytes == 100 * per_token  # the storage of the allocated buffers (on the meta device)
    small = GPTConfig(vocab_size=64, n_positions=16, n_embd=32, n_layer=3, n_head=4)
    assert KVCache(small, 2, 16).nbytes == 2 * 16 * KVCache.bytes_per_token(small, torch.float32) == 2 * 16 * 192
    mha = GPTConfig.from_name("santacoder-1b", multi_query=False)
    assert KVCache.bytes_per_token(mha, torch.float16) == config.n_head * per_token


def test_samples_of_a_prompt_share_its_prefill_and_equal_separate_greedy_runs():
    model = model_of(True)
    prompts = [torch.randint(0, 101, (n,)) for n in (5, 9)]
    calls = []
    forward = model.forward
    model.forward = lambda ids, **kw: calls.append(ids.shape) or forward(ids, **kw)
    out = generate(model, prompts, 6, num_samples=3)
    assert calls[0] == (2, 9) and all(shape == (6, 1) for shape in calls[1:])  # one prefill of the 2 prompts
    model.forward = forward
    alone = generate(model, prompts, 6)
    assert torch.equal(out, alone.repeat_interleave(3, dim=0))  # greedy: every sample is the same
    sampled = generate(model, prompts, 6, num_samples=4, temperature=1.0, seed=0)
    assert sampled.shape == (8, 6) and len({tuple(r.tolist()) for r in sampled[:4]}) > 1


def test_decoding_that_stops_at_stop_strings_equals_decoding_to_the_limit_then_cutting(tokenizer):
    """Rows that meet a stop at different steps, sampled: the texts are those of decoding every row to its limit
    and cutting at the first stop, and the batch ends once the last row has stopped (fewer forward passes)."""
    from santacoder.inference.stopping import cut_at_stops, generate_until_stops

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, n_positions=128, n_embd=32, n_layer=2, n_head=4)).eval()
    prompts = [tokenizer.encode("def f(x):\n"), tokenizer.encode("import os\nprint(os.getcwd())\n")]
    limit, sampling = 60, dict(temperature=1.0, top_p=0.9, seed=3)
    full = generate(model, prompts, limit, eos_id=tokenizer.eod_id, num_samples=2, **sampling)
    texts = [tokenizer.decode([t for t in row if t != tokenizer.eod_id]) for row in full.tolist()]
    # a stop early in one row and later in another: two characters of each row's own text
    stops = [texts[0][3:5], texts[3][25:27]]
    expected = [cut_at_stops(text, stops) for text in texts]
    assert len({len(e) for e in expected}) > 1  # the rows stop at different places
    result = generate_until_stops(model, tokenizer, prompts, limit, stops, num_samples=2, **sampling)
    assert result.texts == expected
    assert result.model_calls < limit
    # one row stopping never cuts the batch short for the others; each prompt's own budget is kept
    budgets = generate_until_stops(model, tokenizer, prompts, [5, 60], ["\x00never"], num_samples=2, **sampling)
    first_five = [tokenizer.decode([t for t in row[:5] if t != tokenizer.eod_id]) for row in full.tolist()[:2]]
    assert budgets.texts == first_five + texts[2:]


def test_a_tiny_temperature_samples_the_most_likely_token_instead_of_nan():
    logits = torch.tensor([[1.0, 3.0, 2.0], [50.0, -5.0, 49.0]])
    for temperature in (1e-40, 1e-8):
        drawn = sample_next(logits, temperature=temperature, generator=torch.Generator().manual_seed(0))
        assert drawn.tolist() == [1, 0]
