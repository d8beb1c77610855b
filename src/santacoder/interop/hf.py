"""Hugging Face transformers' ``GPTBigCodeForCausalLM`` directories (e.g. ``bigcode/gpt_bigcode-santacoder``).

Our parameter names are GPTBigCode's, and both store ``nn.Linear`` weights as [out, in] with the fused
``attn.c_attn`` ordered [queries | key | value] (MQA) or per head (q, k, v) (MHA), so reading and writing
are renames-free: only the config needs translating and the tied ``lm_head`` checking.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from santacoder.errors import ConfigError
from santacoder.interop.assemble import IGNORED_SUFFIXES, Checkpoint, drop_tied_head
from santacoder.interop.hf_files import load_weights, read_config_json, stored_dtype, weight_files
from santacoder.interop.hf_tokenizer import checked_tokenizer, write_tokenizer_files
from santacoder.model import GPT, GPTConfig
from santacoder.tokenizer import CodeTokenizer

LAYOUT = "gpt_bigcode"
# transformers' names for the tanh approximation of GELU, the activation our MLP computes.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_fast", "gelu_new")
# SantaCoder's <|endoftext|> id, written to config.json when no tokenizer says otherwise.
SANTACODER_EOS_ID = 49152


def check_gpt2_style_config(hf: dict, source: str) -> None:
    """Reject GPT-2-family options whose math differs from our model (shared with the original santacoder)."""
    activation = hf.get("activation_function", "gelu_pytorch_tanh")
    if activation not in TANH_GELUS:
        raise ConfigError(
            f"{source}: activation_function={activation!r} is not supported; this project's GPT computes the "
            f"tanh-approximated GELU ({', '.join(TANH_GELUS)}) as SantaCoder does"
        )
    if not hf.get("scale_attn_weights", True):
        raise ConfigError(
            f"{source}: scale_attn_weights=false (unscaled attention) is not supported; our attention scales "
            "scores by 1/sqrt(head_dim)"
        )
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        raise ConfigError(
            f"{source}: scale_attn_by_inverse_layer_idx=true changes the attention scores per layer; this "
            "project's GPT scales by 1/sqrt(head_dim) only"
        )
    if hf.get("add_cross_attention", False):
        raise ConfigError(f"{source}: add_cross_attention=true (an encoder-decoder model) is not supported")


def gpt_config(hf: dict, source: str, multi_query: bool) -> GPTConfig:
    """Our GPTConfig from GPT-2-family config.json fields."""
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            n_positions=hf.get("n_positions", hf.get("n_ctx")),
            n_embd=hf["n_embd"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_inner=hf.get("n_inner"),
            multi_query=multi_query,
            layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
            embd_pdrop=float(hf.get("embd_pdrop", 0.1)),
            attn_pdrop=float(hf.get("attn_pdrop", 0.1)),
            resid_pdrop=float(hf.get("resid_pdrop", 0.1)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
        )
    except KeyError as e:
        raise ConfigError(f"{source}: config.json lacks the field {e.args[0]!r}") from e
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{source}: config.json describes an invalid model: {e}") from e


def read_config(directory: Path) -> GPTConfig:
    hf = read_config_json(directory)
    source = f"GPTBigCode config {str(directory / 'config.json')!r}"
    if hf.get("model_type") != "gpt_bigcode":
        raise ConfigError(f"{source}: model_type is {hf.get('model_type')!r}, expected 'gpt_bigcode'")
    check_gpt2_style_config(hf, source)
    return gpt_config(hf, source, multi_query=bool(hf.get("multi_query", True)))


def open_checkpoint(directory: Path) -> Checkpoint:
    config = read_config(directory)
    files = weight_files(directory)
    tied = bool(read_config_json(directory).get("tie_word_embeddings", True))
    source = f"GPTBigCode directory {str(directory)!r}"

    def read_weights() -> dict[str, torch.Tensor]:
        weights = {}
        for name, tensor in load_weights(files).items():
            if name.endswith(IGNORED_SUFFIXES):
                continue
            if not name.startswith(("transformer.", "lm_head.")):
                name = "transformer." + name  # saved from the bare GPTBigCodeModel (no LM head wrapper)
            weights[name] = tensor
        return drop_tied_head(weights, source, tied_flag=tied)

    return Checkpoint(LAYOUT, directory, config, stored_dtype(files), read_weights)


def hf_config_dict(config: GPTConfig, dtype: torch.dtype, bos_id: int | None, eos_id: int | None) -> dict:
    """config.json of a ``GPTBigCodeForCausalLM`` computing exactly what our GPT computes."""
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": ["GPTBigCodeForCausalLM"],
        "model_type": "gpt_bigcode",
        "vocab_size": config.vocab_size,
        "n_positions": config.n_positions,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.inner_dim,
        "multi_query": config.multi_query,
        "activation_function": "gelu_pytorch_tanh",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "embd_pdrop": config.embd_pdrop,
        "attn_pdrop": config.attn_pdrop,
        "resid_pdrop": config.resid_pdrop,
        "initializer_range": config.initializer_range,
        "scale_attn_weights": True,
        "attention_softmax_in_fp32": True,
        "scale_attention_softmax_in_fp32": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        # transformers >= 5 reads "dtype", earlier versions "torch_dtype"
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
    }


def save_hf(model: GPT, out_dir: str | Path, tokenizer: CodeTokenizer | str | Path | None = None) -> Path:
    """Write ``model`` as a transformers GPTBigCode directory; ``AutoModelForCausalLM.from_pretrained`` loads it.

    Writes ``config.json`` and ``model.safetensors`` (the tied ``lm_head`` is left out: transformers ties it
    back to ``transformer.wte``), and with ``tokenizer`` (a ``CodeTokenizer`` or a tokenizer.json path) the
    files ``AutoTokenizer`` reads. Returns ``out_dir``.
    """
    if not isinstance(model, GPT):
        raise ConfigError(f"save_hf expects a santacoder GPT, got {type(model).__name__}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"save_hf output {str(out_dir)!r} exists and is not a directory")
    if tokenizer is not None:  # checked before anything is written
        tokenizer = checked_tokenizer(tokenizer, model.config)
    out_dir.mkdir(parents=True, exist_ok=True)
    bos_id = eos_id = SANTACODER_EOS_ID if model.config.vocab_size > SANTACODER_EOS_ID else None
    if tokenizer is not None:
        bos_id = eos_id = write_tokenizer_files(tokenizer, out_dir, model_max_length=model.config.n_positions)
    state = {
        name: t.detach().to("cpu").contiguous()
        for name, t in model.state_dict().items()
        if name != "lm_head.weight"  # safetensors stores no shared tensors; transformers re-ties the head
    }
    dtype = model.transformer.wte.weight.dtype
    config = hf_config_dict(model.config, dtype, bos_id, eos_id)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir
