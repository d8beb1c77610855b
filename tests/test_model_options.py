"""Activation checkpointing and torch.compile: same numbers, same parameter names, loadable checkpoints."""

import pytest
import torch

from santacoder.training.module import SantaCoderLitModule

CONFIG = dict(
    vocab_size=101,
    n_positions=32,
    n_embd=32,
    n_layer=2,
    n_head=4,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    resid_pdrop=0.0,
)


def grads(module: SantaCoderLitModule, batch) -> dict[str, torch.Tensor]:
    module.zero_grad()
    loss = module.loss(batch)
    loss.backward()
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 101, (2, 32), generator=g)
    return {"input_ids": ids, "labels": torch.roll(ids, -1, dims=1)}


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = SantaCoderLitModule(CONFIG, attn_impl="sdpa")
    torch.manual_seed(0)
    checkpointed = SantaCoderLitModule(CONFIG, attn_impl="sdpa", activation_checkpointing=True)
    assert checkpointed.model.activation_checkpointing
    a, b = grads(plain, batch()), grads(checkpointed, batch())
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.integration
def test_compiled_blocks_keep_parameter_names_and_numbers():
    torch.manual_seed(0)
    module = SantaCoderLitModule(CONFIG, compile=True)  # attn_impl auto: its choice is a constant to dynamo
    keys = list(module.state_dict().keys())
    reference = grads(module, batch())
    module.configure_model()  # what Lightning calls before training
    assert list(module.state_dict().keys()) == keys and not any("_orig_mod" in k for k in keys)
    compiled = grads(module, batch())
    for name in reference:
        torch.testing.assert_close(compiled[name], reference[name], rtol=1e-4, atol=1e-5, msg=name)
    assert "compile" not in module.hparams  # how the model runs is not saved with it
