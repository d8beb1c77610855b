import math

import pytest
import torch

from santacoder import GPT, ConfigError, GPTConfig


def tiny(**overrides) -> GPTConfig:
    base = dict(
        vocab_size=97,
        n_positions=32,
        n_embd=48,
        n_layer=3,
        n_head=4,
        n_inner=None,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
    )
    return GPTConfig(**{**base, **overrides})


def test_santacoder_1b_has_the_papers_parameter_count():
    with torch.device("meta"):
        model = GPT(GPTConfig.from_name("santacoder-1b"))
    assert model.num_params() == 1_124_886_528
    # one shared K/V head of 128: c_attn maps 2048 -> 2048 + 2 * 128
    assert tuple(model.transformer.h[0].attn.c_attn.weight.shape) == (2304, 2048)


def test_mha_ablation_is_larger():
    with torch.device("meta"):
        mha = GPT(GPTConfig.from_name("santacoder-1b", multi_query=False))
    # 24 layers x (2048 x 2 x (2048 - 128) weights + 2 x (2048 - 128) biases) more than MQA: the paper's 1.3B
    assert mha.num_params() == 1_124_886_528 + 24 * (2 * 2048 * 1920 + 2 * 1920)


def test_logits_shape_and_tied_head():
    model = GPT(tiny(), attn_impl="math")
    logits = model(torch.randint(0, 97, (2, 11)))
    assert logits.shape == (2, 11, 97)
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("multi_query", [True, False])
def test_backends_give_the_same_logits(multi_query):
    torch.manual_seed(0)
    model = GPT(tiny(multi_query=multi_query), attn_impl="math").eval()
    ids = torch.randint(0, 97, (2, 20))
    ref = model(ids)
    for impl in ("sdpa", "auto"):
        assert model.set_attn_impl(impl).attn_impl == impl
        assert all(block.attn.attn_impl == impl for block in model.transformer.h)
        torch.testing.assert_close(model(ids), ref, atol=1e-5, rtol=1e-5)


def test_the_attention_backend_is_not_part_of_the_model():
    """How attention runs is chosen where the model runs: not in the config, the state dict or a checkpoint."""
    a, b = GPT(tiny(), attn_impl="math"), GPT(tiny(), attn_impl="sdpa")
    assert a.config == b.config and "attn_impl" not in a.config.to_dict()
    assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.raises(ConfigError, match="attn_impl='flash' must be one of"):
        GPT(tiny(), attn_impl="flash")
    with pytest.raises(ConfigError, match="attn_impl='flash' must be one of"):
        a.set_attn_impl("flash")


def test_config_from_a_stored_dict():
    stored = {**tiny().to_dict(), "attn_impl": "xformers"}  # as checkpoints written before format 1 hold it
    assert GPTConfig.from_dict(stored) == tiny()
    with pytest.raises(ConfigError, match=r"old.ckpt has fields GPTConfig does not know: \['rotary'\]"):
        GPTConfig.from_dict({**tiny().to_dict(), "rotary": True}, source="old.ckpt")
    with pytest.raises(ConfigError, match="old.ckpt is incomplete: .*n_head"):
        GPTConfig.from_dict({k: v for k, v in tiny().to_dict().items() if k != "n_head"}, source="old.ckpt")


@pytest.mark.parametrize("multi_query", [True, False])
def test_kv_cache_decoding_matches_full_forward(multi_query):
    from santacoder.model.kv_cache import KVCache

    torch.manual_seed(0)
    model = GPT(tiny(multi_query=multi_query), attn_impl="sdpa").eval()
    ids = torch.randint(0, 97, (2, 12))
    full = model(ids)
    cache = KVCache(model.config, batch_size=2, max_len=12)
    steps = [model(ids[:, :8], cache=cache)]
    for t in range(8, 12):
        steps.append(model(ids[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.keys[0].shape == (2, 1 if multi_query else 4, 12, 12)  # MQA caches one K/V head
    assert cache.length == 12


def test_causality_future_tokens_do_not_change_the_past():
    model = GPT(tiny()).eval()
    a = torch.randint(0, 97, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 97
    torch.testing.assert_close(model(a)[:, :10], model(b)[:, :10])


def test_init_follows_megatron():
    torch.manual_seed(0)
    cfg = tiny(n_embd=256, n_layer=8, n_head=8, vocab_size=4000, initializer_range=0.022)
    model = GPT(cfg)
    block = model.transformer.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.022, rel=0.05)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(0.022 / math.sqrt(16), rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(0.022 / math.sqrt(16), rel=0.05)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.022, rel=0.05)
    assert block.attn.c_attn.bias.abs().max() == 0 and block.ln_1.weight.min() == 1


def test_too_long_input_is_an_error():
    with pytest.raises(ValueError, match="longer than the model's n_positions=32"):
        GPT(tiny())(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(n_embd=50), "n_embd=50 must be divisible by n_head=4"),
        (dict(n_layer=0), "n_layer=0 must be a positive integer"),
        (dict(attn_pdrop=1.5), "attn_pdrop=1.5 must be in"),
        (dict(n_inner=-1), "n_inner=-1"),
    ],
)
def test_bad_config_values_name_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)


def test_presets():
    paper = GPTConfig.from_name("santacoder-1b")
    assert (paper.inner_dim, paper.n_kv_head, paper.head_dim, paper.initializer_range) == (8192, 1, 128, 0.022)
    assert (paper.embd_pdrop, paper.attn_pdrop, paper.resid_pdrop) == (0.1, 0.1, 0.1)
    assert GPTConfig.from_name("tiny", n_layer=2).n_layer == 2
    with pytest.raises(ConfigError, match="unknown model preset 'gpt5'"):
        GPTConfig.from_name("gpt5")
