"""Megatron-LM GPT checkpoints, as SantaCoder was trained (``bigcode/santacoder-megatron``).

Files: a save directory with ``latest_checkpointed_iteration.txt`` (an iteration number or ``release``),
iteration directories ``iter_0600000`` / ``release``, rank directories ``mp_rank_00`` and in them
``model_optim_rng.pt`` (or ``model_rng.pt`` with the distributed optimizer). Only TP = PP = 1 is read.

The file pickles ``args`` (an argparse.Namespace holding Megatron enums) next to the weights; it is read by
``santacoder.checkpoints.safe_load.safe_torch_load``, so no Megatron install is needed and no code from the file runs.
Weights live in ``model["language_model"]``: ``embedding.{word,position}_embeddings.weight`` and an
``encoder`` (older: ``transformer``) dict of ``layers.N.*`` plus ``final_layernorm``. Linear weights are
[out, in] like ours. Multi-query attention stores ``self_attention.query`` [C, C] and ``key_value``
[2 * head_dim, C] (key rows, then value rows): concatenated they are our [queries | key | value] ``c_attn``.
Multi-head attention stores a fused ``query_key_value`` whose row order depends on ``checkpoint_version``;
from version 2 on it is per head (q, k, v), exactly our MHA layout. Embeddings are tied to the output layer.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from santacoder.checkpoints.layouts.base import Checkpoint, drop_tied_head
from santacoder.checkpoints.safe_load import safe_torch_load
from santacoder.config import GPTConfig
from santacoder.errors import ConfigError

LAYOUT = "megatron"
MODEL_FILES = ("model_optim_rng.pt", "model_rng.pt")
TRACKER = "latest_checkpointed_iteration.txt"
_ITERATION_DIR = re.compile(r"iter_\d+|release")
_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)")
# Per-layer Megatron names -> ours (the (self_)attention.query/key_value/query_key_value are fused apart).
_LAYER_RENAMES = {
    "input_layernorm": "ln_1",
    "post_attention_layernorm": "ln_2",
    "self_attention.dense": "attn.c_proj",
    "mlp.dense_h_to_4h": "mlp.c_fc",
    "mlp.dense_4h_to_h": "mlp.c_proj",
}


def looks_like_megatron(path: Path) -> bool:
    """Whether ``path`` is a Megatron save, iteration or rank directory, or a Megatron model file by name."""
    if path.is_file():
        return path.name in MODEL_FILES
    if (path / TRACKER).is_file() or _ITERATION_DIR.fullmatch(path.name):
        return True
    if any((path / name).is_file() for name in MODEL_FILES):
        return True
    return any(path.glob("mp_rank_*/model*.pt")) or any(p.is_dir() for p in path.glob("iter_*"))


def find_model_file(path: Path) -> Path:
    """The model file of a save directory, an iteration directory, a rank directory, or the file itself."""
    if path.is_file():
        return path
    tracker = path / TRACKER
    if tracker.is_file():
        text = tracker.read_text(encoding="utf-8", errors="replace").strip()
        if text == "release":
            path = path / "release"
        elif text.isdigit():
            path = path / f"iter_{int(text):07d}"
        else:
            raise ConfigError(f"{str(tracker)!r} should hold an iteration number or 'release', not {text[:40]!r}")
        if not path.is_dir():
            raise ConfigError(f"{str(tracker)!r} points to {str(path)!r}, which does not exist")
    elif not _ITERATION_DIR.fullmatch(path.name) and not any((path / n).is_file() for n in MODEL_FILES):
        # A save directory without its tracker file: take the latest iteration, as Megatron would have.
        iterations = sorted(p for p in path.glob("iter_*") if p.is_dir() and p.name[5:].isdigit())
        if iterations:
            path = iterations[-1]
    direct = [path / n for n in MODEL_FILES if (path / n).is_file()]
    if direct:
        return direct[0]
    found = sorted(p for n in MODEL_FILES for p in path.glob(f"mp_rank_*/{n}"))
    if not found:
        raise ConfigError(
            f"{str(path)!r} holds no Megatron model file (mp_rank_00/{MODEL_FILES[0]} or mp_rank_00/{MODEL_FILES[1]})"
        )
    if len(found) > 1:
        raise ConfigError(
            f"{str(path)!r} holds {len(found)} model-parallel shards ({', '.join(p.parent.name for p in found)}); "
            "only tensor- and pipeline-parallel size 1 is supported. Merge them first with Megatron-LM's "
            "tools/checkpoint_util.py --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1."
        )
    return found[0]


def _flatten(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(tree, torch.Tensor):
        flat[prefix[:-1]] = tree
    return flat  # anything else (None, Transformer Engine's _extra_state bytes) holds no weights


class _MegatronFile:
    """A loaded Megatron model file: its args, checkpoint version and flattened language-model tensors."""

    def __init__(self, path: Path):
        self.path = path
        self.source = f"Megatron-LM checkpoint {str(path)!r}"
        obj = safe_torch_load(path, allow_megatron=True)
        if not isinstance(obj, dict):
            raise ConfigError(f"{self.source} is not a Megatron-LM checkpoint (holds a {type(obj).__name__})")
        if "model" not in obj and "model1" in obj:
            raise ConfigError(f"{self.source} uses virtual pipeline stages (model0, model1, ...); merge them first")
        model = obj.get("model", obj.get("model0"))
        if not isinstance(model, dict) or not isinstance(model.get("language_model"), dict):
            raise ConfigError(
                f"{self.source} has no model['language_model'] dict; it is not a Megatron-LM GPT checkpoint"
            )
        args = obj.get("args")
        self.args = args if isinstance(args, argparse.Namespace) else argparse.Namespace()
        self.version = float(obj.get("checkpoint_version", 0) or 0)
        self.tensors = _flatten(model["language_model"])
        self.encoder = "encoder" if any(k.startswith("encoder.") for k in self.tensors) else "transformer"

    def arg(self, name: str, default: Any = None) -> Any:
        value = getattr(self.args, name, None)
        return default if value is None else value

    def tensor(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise ConfigError(f"{self.source} lacks the tensor language_model.{name}")
        return self.tensors[name]

    def layer_tensors(self) -> dict[int, dict[str, torch.Tensor]]:
        """``{layer index: {name in the layer: tensor}}``; older ``attention.*`` names read as ``self_attention.*``."""
        layers: dict[int, dict[str, torch.Tensor]] = {}
        prefix = self.encoder + "."
        for key, tensor in self.tensors.items():
            match = _LAYER_KEY.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
            if match:
                name = re.sub(r"^attention\.", "self_attention.", match.group(2))
                layers.setdefault(int(match.group(1)), {})[name] = tensor
        return layers

    def config(self) -> GPTConfig:
        self._check_architecture()
        wte = self.tensor("embedding.word_embeddings.weight")
        if "embedding.position_embeddings.weight" not in self.tensors:
            raise ConfigError(
                f"{self.source} has no learned position embeddings (rotary or ALiBi positions?); this project's "
                "GPT uses SantaCoder's learned absolute positions"
            )
        wpe = self.tensors["embedding.position_embeddings.weight"]
        layers = self.layer_tensors()
        first = layers.get(0, {})
        has_kv = "self_attention.key_value.weight" in first
        head_type = self.arg("attention_head_type", "multiquery" if has_kv else "multihead")
        if head_type not in ("multiquery", "multihead"):
            raise ConfigError(f"{self.source}: attention_head_type={head_type!r} is not 'multiquery' or 'multihead'")
        multi_query = head_type == "multiquery"
        if layers and multi_query != has_kv:
            raise ConfigError(
                f"{self.source}: args say attention_head_type={head_type!r} but the layers store "
                f"{'query + key_value' if has_kv else 'query_key_value'}; the args and the weights disagree"
            )
        n_embd = int(self.arg("hidden_size", wte.shape[1]))
        n_head = self.arg("num_attention_heads")
        if n_head is None:
            if not has_kv:
                raise ConfigError(f"{self.source}: args lack num_attention_heads, needed for multi-head attention")
            n_head = n_embd // (first["self_attention.key_value.weight"].shape[0] // 2)  # head_dim from K/V rows
        fc = first.get("mlp.dense_h_to_4h.weight")
        try:
            return GPTConfig(
                vocab_size=int(self.arg("padded_vocab_size", wte.shape[0])),
                n_positions=int(self.arg("max_position_embeddings", wpe.shape[0])),
                n_embd=n_embd,
                n_layer=int(self.arg("num_layers", len(layers))),
                n_head=int(n_head),
                n_inner=int(self.arg("ffn_hidden_size", fc.shape[0] if fc is not None else 4 * n_embd)),
                multi_query=multi_query,
                layer_norm_epsilon=float(self.arg("layernorm_epsilon", 1e-5)),
                embd_pdrop=float(self.arg("hidden_dropout", 0.1)),
                attn_pdrop=float(self.arg("attention_dropout", 0.1)),
                resid_pdrop=float(self.arg("hidden_dropout", 0.1)),
                initializer_range=float(self.arg("init_method_std", 0.02)),
            )
        except (ConfigError, TypeError, ValueError) as e:
            raise ConfigError(f"{self.source}: args describe an invalid model: {e}") from e

    def _check_architecture(self) -> None:
        """Reject Megatron options that change the math away from SantaCoder's (and our) GPT-2 block."""
        gelu_flags = [self.arg(n) for n in ("openai_gelu", "bias_gelu_fusion", "bias_activation_fusion")]
        if any(f is not None for f in gelu_flags) and not any(gelu_flags):
            raise ConfigError(
                f"{self.source}: trained with the exact (erf) GELU (no bias_gelu_fusion, no openai_gelu); this "
                "project's GPT computes the tanh-approximated GELU that SantaCoder used"
            )
        for flag, what in (
            ("swiglu", "a SwiGLU MLP"),
            ("apply_residual_connection_post_layernorm", "residuals taken after the LayerNorm"),
            ("untie_embeddings_and_output_weights", "an output layer untied from the embeddings"),
        ):
            if self.arg(flag, False):
                raise ConfigError(f"{self.source}: {flag}=True ({what}) is not supported by this project's GPT")
        if self.arg("normalization", "LayerNorm") != "LayerNorm":
            raise ConfigError(f"{self.source}: normalization={self.arg('normalization')!r} is not LayerNorm")

    def weights(self, config: GPTConfig) -> dict[str, torch.Tensor]:
        """The tensors in this project's names and layouts."""
        weights = {
            "transformer.wte.weight": self.tensor("embedding.word_embeddings.weight"),
            "transformer.wpe.weight": self.tensor("embedding.position_embeddings.weight"),
        }
        for kind in ("weight", "bias"):
            weights[f"transformer.ln_f.{kind}"] = self.tensor(f"{self.encoder}.final_layernorm.{kind}")
        if "output_layer.weight" in self.tensors:  # --untie-embeddings-and-output-weights: must still be tied
            weights["lm_head.weight"] = self.tensors["output_layer.weight"]
        for index, layer in sorted(self.layer_tensors().items()):
            prefix = f"transformer.h.{index}."
            for name, tensor in layer.items():
                if name.endswith("_extra_state"):
                    continue
                module, _, kind = name.rpartition(".")
                if module in _LAYER_RENAMES:
                    weights[prefix + f"{_LAYER_RENAMES[module]}.{kind}"] = tensor
                elif module == "self_attention.query":
                    key_value = layer.get(f"self_attention.key_value.{kind}")
                    if key_value is None:
                        raise ConfigError(f"{self.source}: layer {index} has query.{kind} but no key_value.{kind}")
                    weights[prefix + f"attn.c_attn.{kind}"] = torch.cat([tensor, key_value], dim=0)
                elif module == "self_attention.query_key_value":
                    weights[prefix + f"attn.c_attn.{kind}"] = self._per_head_qkv(tensor, config)
                elif module != "self_attention.key_value":
                    raise ConfigError(
                        f"{self.source}: unexpected tensor {self.encoder}.layers.{index}.{name}; this is not a "
                        "GPT-2-style (SantaCoder) Megatron model"
                    )
        return drop_tied_head(weights, self.source)

    def _per_head_qkv(self, tensor: torch.Tensor, config: GPTConfig) -> torch.Tensor:
        """MHA ``query_key_value`` rows reordered to per-head (q, k, v), as ``checkpoint_version`` >= 2 stores them."""
        nh, hd = config.n_head, config.head_dim
        if tensor.shape[0] != 3 * nh * hd:
            return tensor  # wrong size: check_weights reports it with the shape the config implies
        rest = tuple(tensor.shape[1:])
        if self.version < 1.0:  # (3, nh, hd): all queries, all keys, all values
            return tensor.reshape(3, nh, hd, *rest).transpose(0, 1).reshape(3 * nh * hd, *rest)
        if self.version < 2.0:  # (nh, hd, 3)
            return tensor.reshape(nh, hd, 3, *rest).transpose(1, 2).reshape(3 * nh * hd, *rest)
        return tensor  # (nh, 3, hd)


def open_checkpoint(path: Path) -> Checkpoint:
    file = _MegatronFile(find_model_file(path))
    config = file.config()
    dtype = file.tensor("embedding.word_embeddings.weight").dtype
    return Checkpoint(LAYOUT, file.path, config, dtype, lambda: file.weights(config))
