"""Tiny models written in each checkpoint layout the interop readers accept, and the parity checks.

Every layout is written here from the public description of its format, independently of the readers under
test (src/santacoder/interop): transformers' ``modeling_gpt_bigcode.py`` and ``GPTBigCodeConfig``; the
bigcode-project/Megatron-LM fork's ``megatron/checkpointing.py`` (save directory, tracker file, iteration and
rank directories, ``checkpoint_version``) and ``megatron/model/transformer.py`` (parameter names and the
multi-query ``query`` / ``key_value`` split); and the ``GPT2LMHeadCustomModel`` code of the bigcode/santacoder
upload. Nothing is downloaded. Weights are rounded to fp16-representable values so that the fp16 Megatron
files hold exactly the same model and every comparison can be at 1e-5 in fp32.

Used by test_interop.py and test_cli.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

from santacoder import GPT

# Odd sizes on purpose: 5 heads of 12, an MLP that is not 4 * n_embd, a vocabulary that is no power of two.
TINY = dict(vocab_size=131, n_positions=37, n_embd=60, n_layer=2, n_head=5, n_inner=100)
ATOL = 1e-5
ROUND_TRIP_VOCAB = 263  # a trained byte-level BPE has at least 256 + 5 tokens


def fp16_exact(module: torch.nn.Module, seed: int) -> None:
    """Random weights (not HF's zero biases / unit LayerNorms) that fp16 represents exactly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_((torch.randn(p.shape, generator=generator) * 0.3).half().float())


def make_hf_model(multi_query: bool, seed: int = 0, **overrides) -> GPTBigCodeForCausalLM:
    config = GPTBigCodeConfig(
        **{**TINY, **overrides}, multi_query=multi_query, activation_function="gelu_pytorch_tanh",
        embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = GPTBigCodeForCausalLM(config)
    fp16_exact(model, seed)
    return model.eval()


def input_ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (2, 11), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits


@torch.no_grad()
def our_logits(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    return model(ids)


def hf_state(model: GPTBigCodeForCausalLM) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def layer_count(state: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.h."))


# --- Megatron-LM -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def fake_megatron_module():
    """A ``megatron.model.enums`` module that exists only while pickling, as on the training cluster."""
    names = ("megatron", "megatron.model", "megatron.model.enums")
    for name in names:
        sys.modules[name] = types.ModuleType(name)

    class PositionEmbeddingType(enum.Enum):
        rotary = 1
        absolute = 2

    PositionEmbeddingType.__module__ = "megatron.model.enums"
    PositionEmbeddingType.__qualname__ = "PositionEmbeddingType"
    sys.modules["megatron.model.enums"].PositionEmbeddingType = PositionEmbeddingType
    try:
        yield PositionEmbeddingType
    finally:
        for name in names:
            del sys.modules[name]


def megatron_model(hf: GPTBigCodeForCausalLM, version: float = 3.0) -> dict:
    """``model`` of an fp16 Megatron-LM checkpoint holding the weights of ``hf``, named as in ``transformer.py``."""
    state, cfg = hf_state(hf), hf.config
    C, nh, hd = cfg.n_embd, cfg.n_head, cfg.n_embd // cfg.n_head
    encoder = {}
    for i in range(layer_count(state)):
        src, dst = f"transformer.h.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            encoder[dst + f"input_layernorm.{kind}"] = state[src + f"ln_1.{kind}"]
            c_attn = state[src + f"attn.c_attn.{kind}"]
            if cfg.multi_query:
                encoder[dst + f"self_attention.query.{kind}"] = c_attn[:C]
                encoder[dst + f"self_attention.key_value.{kind}"] = c_attn[C:]  # key rows, then value rows
            else:
                rest = c_attn.shape[1:]
                if version < 1.0:  # (3, nh, hd): all queries, all keys, all values
                    c_attn = c_attn.reshape(nh, 3, hd, *rest).transpose(0, 1).reshape(3 * C, *rest)
                elif version < 2.0:  # (nh, hd, 3)
                    c_attn = c_attn.reshape(nh, 3, hd, *rest).transpose(1, 2).reshape(3 * C, *rest)
                encoder[dst + f"self_attention.query_key_value.{kind}"] = c_attn
            encoder[dst + f"self_attention.dense.{kind}"] = state[src + f"attn.c_proj.{kind}"]
            encoder[dst + f"post_attention_layernorm.{kind}"] = state[src + f"ln_2.{kind}"]
            encoder[dst + f"mlp.dense_h_to_4h.{kind}"] = state[src + f"mlp.c_fc.{kind}"]
            encoder[dst + f"mlp.dense_4h_to_h.{kind}"] = state[src + f"mlp.c_proj.{kind}"]
    for kind in ("weight", "bias"):
        encoder[f"final_layernorm.{kind}"] = state[f"transformer.ln_f.{kind}"]
    embedding = {
        "word_embeddings": {"weight": state["transformer.wte.weight"]},
        "position_embeddings": {"weight": state["transformer.wpe.weight"]},
    }
    language_model = {"embedding": embedding, "encoder": encoder}
    return {"language_model": _half(language_model)}


def _half(tree):
    return {k: _half(v) for k, v in tree.items()} if isinstance(tree, dict) else tree.half().contiguous()


def megatron_args(cfg: GPTBigCodeConfig, enum_type: type | None, **overrides) -> argparse.Namespace:
    args = argparse.Namespace(
        num_layers=cfg.n_layer, hidden_size=cfg.n_embd, num_attention_heads=cfg.n_head, ffn_hidden_size=cfg.n_inner,
        max_position_embeddings=cfg.n_positions, padded_vocab_size=cfg.vocab_size, make_vocab_size_divisible_by=1,
        attention_head_type="multiquery" if cfg.multi_query else "multihead", layernorm_epsilon=1e-5,
        hidden_dropout=0.0, attention_dropout=0.0, init_method_std=0.022, bias_gelu_fusion=True, openai_gelu=False,
        fp16=True, params_dtype=torch.float16, tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
    )  # fmt: skip
    if enum_type is not None:
        args.position_embedding_type = enum_type.absolute
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def write_megatron(
    hf: GPTBigCodeForCausalLM, root: Path, version: float = 3.0, with_args: bool = True, **arg_overrides
) -> Path:
    """A Megatron-LM save directory (tracker, iteration and rank directories) as ``checkpointing.py`` writes."""
    iteration = root / "iter_0000010" / "mp_rank_00"
    iteration.mkdir(parents=True)
    (root / "latest_checkpointed_iteration.txt").write_text("10")
    model = megatron_model(hf, version)
    with fake_megatron_module() as enum_type:
        checkpoint = {
            "checkpoint_version": version,
            "iteration": 10,
            "model": model,
            # The optimizer and RNG state a real file carries (numpy's RNG state is pickled as arrays).
            "optimizer": {"optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.95)}]}},
            "rng_state": [{"random_rng_state": (3, (1, 2), None), "np_rng_state": np.random.get_state()}],
        }
        if with_args:
            checkpoint["args"] = megatron_args(hf.config, enum_type, **arg_overrides)
        torch.save(checkpoint, iteration / "model_optim_rng.pt")
    return root


# --- original bigcode/santacoder (GPT2LMHeadCustomModel) -------------------------------------------------


def write_santacoder(hf: GPTBigCodeForCausalLM, directory: Path, fmt: str = "bin") -> Path:
    """An original santacoder directory: Conv1D [in, out] weights, q_attn + kv_attn, mask buffers."""
    state, cfg = hf_state(hf), hf.config
    C, P = cfg.n_embd, cfg.n_positions
    out = {}
    for name, tensor in state.items():
        if ".attn.c_attn." in name:
            prefix, kind = name.split(".attn.c_attn.")
            q, kv = tensor[:C], tensor[C:]
            if kind == "weight":
                q, kv = q.t(), kv.t()  # Conv1D: [in, out]; kv columns are key then value
            out[f"{prefix}.attn.q_attn.{kind}"] = q.contiguous()
            out[f"{prefix}.attn.kv_attn.{kind}"] = kv.contiguous()
        elif name.endswith(("attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")):
            out[name] = tensor.t().contiguous()
        else:
            out[name] = tensor
    out["lm_head.weight"] = state["transformer.wte.weight"].clone()  # tied, stored again as the upload does
    for i in range(cfg.n_layer):
        out[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(P, P, dtype=torch.uint8)).view(1, 1, P, P)
        out[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    directory.mkdir(parents=True)
    config = {
        "architectures": ["GPT2LMHeadCustomModel"],
        "auto_map": {
            "AutoConfig": "configuration_gpt2_mq.GPT2CustomConfig",
            "AutoModelForCausalLM": "modeling_gpt2_mq.GPT2LMHeadCustomModel",
        },
        "model_type": "gpt2",
        "attention_head_type": "multiquery",
        "activation_function": "gelu_fast",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.n_positions, "n_embd": C, "n_layer": cfg.n_layer,
        "n_head": cfg.n_head, "n_inner": cfg.n_inner, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False, "torch_dtype": "float32",
        "bos_token_id": 49152, "eos_token_id": 49152,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    if fmt == "bin":
        torch.save(out, directory / "pytorch_model.bin")
    else:
        out.pop("lm_head.weight")  # safetensors cannot hold the tied duplicate
        save_file({k: v.contiguous() for k, v in out.items()}, directory / "model.safetensors", {"format": "pt"})
    return directory


def assert_parity(model: GPT, hf: GPTBigCodeForCausalLM) -> None:
    assert isinstance(model, GPT) and not model.training
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = input_ids()
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf, ids), atol=ATOL, rtol=0)
