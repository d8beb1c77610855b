"""The original ``bigcode/santacoder`` upload: GPT-2 with custom code (``GPT2LMHeadCustomModel``).

Its ``config.json`` says ``model_type: gpt2`` plus ``attention_head_type: multiquery``. Weights use GPT-2's
``Conv1D``, stored [in, out] (the transpose of ``nn.Linear``), and attention has separate projections:
``attn.q_attn`` [C, C] and ``attn.kv_attn`` [C, 2 * head_dim] whose output columns are key then value.
Fusing ``[q_attn.T ; kv_attn.T]`` gives GPTBigCode's (and our) ``c_attn`` ordered [queries | key | value].
Causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` may be stored too; they are not weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from santacoder.errors import ConfigError
from santacoder.interop.assemble import IGNORED_SUFFIXES, Checkpoint, drop_tied_head
from santacoder.interop.hf import check_gpt2_style_config, gpt_config
from santacoder.interop.hf_files import load_weights, read_config_json, stored_dtype, weight_files
from santacoder.model import GPTConfig

LAYOUT = "santacoder"
ARCHITECTURE = "GPT2LMHeadCustomModel"
# Conv1D weights: transposed to nn.Linear's [out, in].
_CONV1D = re.compile(r"transformer\.h\.\d+\.(attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")


def is_santacoder_config(hf: dict) -> bool:
    return ARCHITECTURE in (hf.get("architectures") or []) or "attention_head_type" in hf


def read_config(directory: Path) -> GPTConfig:
    hf = read_config_json(directory)
    source = f"santacoder config {str(directory / 'config.json')!r}"
    head_type = hf.get("attention_head_type", "multiquery")
    if head_type != "multiquery":
        raise ConfigError(
            f"{source}: attention_head_type={head_type!r} is not supported; this layout is read for SantaCoder's "
            "multi-query models ('multiquery'). Convert other models to transformers' GPTBigCode first."
        )
    check_gpt2_style_config(hf, source)
    return gpt_config(hf, source, multi_query=True)


def convert_weights(raw: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """GPT2LMHeadCustomModel's tensors in this project's (GPTBigCode's) names and layouts."""
    weights: dict[str, torch.Tensor] = {}
    q_parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in raw.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # saved from the bare model (no LM head wrapper)
        match = re.fullmatch(r"(transformer\.h\.\d+\.attn)\.(q_attn|kv_attn)\.(weight|bias)", name)
        if match:
            prefix, proj, kind = match.groups()
            q_parts.setdefault(f"{prefix}.c_attn.{kind}", {})[proj] = tensor
        elif _CONV1D.fullmatch(name):
            weights[name] = _transpose(tensor, name, source)
        else:
            weights[name] = tensor
    for fused, parts in q_parts.items():
        if set(parts) != {"q_attn", "kv_attn"}:
            layer = fused.rsplit(".", 2)[0]
            raise ConfigError(f"{source}: {layer} has {sorted(parts)} but needs both q_attn and kv_attn")
        if fused.endswith(".weight"):
            q, kv = (_transpose(parts[p], fused, source) for p in ("q_attn", "kv_attn"))
        else:
            q, kv = parts["q_attn"], parts["kv_attn"]
        if q.shape[1:] != kv.shape[1:]:
            raise ConfigError(f"{source}: q_attn and kv_attn of {fused} have incompatible shapes {q.shape}, {kv.shape}")
        weights[fused] = torch.cat([q, kv], dim=0)  # rows [queries | key | value]
    return weights


def _transpose(tensor: torch.Tensor, name: str, source: str) -> torch.Tensor:
    if tensor.dim() != 2:
        raise ConfigError(f"{source}: {name} should be a 2-D Conv1D weight but has shape {tuple(tensor.shape)}")
    return tensor.t()


def open_checkpoint(directory: Path) -> Checkpoint:
    config = read_config(directory)
    files = weight_files(directory)
    source = f"santacoder directory {str(directory)!r}"
    tied = bool(read_config_json(directory).get("tie_word_embeddings", True))

    def read_weights() -> dict[str, torch.Tensor]:
        return drop_tied_head(convert_weights(load_weights(files), source), source, tied_flag=tied)

    return Checkpoint(LAYOUT, directory, config, stored_dtype(files), read_weights)
