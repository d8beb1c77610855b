"""Hugging Face model directories: ``config.json``, weights (single or sharded) and tokenizer files.

Two layouts are read, told apart by config.json:

- ``gpt_bigcode``: transformers' ``GPTBigCodeForCausalLM`` (e.g. ``bigcode/gpt_bigcode-santacoder``). Our
  parameter names are GPTBigCode's, and both store ``nn.Linear`` weights as [out, in] with the fused
  ``attn.c_attn`` ordered [queries | key | value] (MQA) or per head (q, k, v) (MHA), so reading and writing
  are renames-free: only the config needs translating and the tied ``lm_head`` checking.
- ``santacoder``: the original ``bigcode/santacoder`` upload, GPT-2 with custom code
  (``GPT2LMHeadCustomModel``; ``model_type: gpt2`` plus ``attention_head_type: multiquery``). Weights use
  GPT-2's ``Conv1D``, stored [in, out] (the transpose of ``nn.Linear``), and attention has separate
  projections: ``attn.q_attn`` [C, C] and ``attn.kv_attn`` [C, 2 * head_dim] whose output columns are key
  then value. Fusing ``[q_attn.T ; kv_attn.T]`` gives GPTBigCode's (and our) ``c_attn``.

Both may store the causal-mask buffers ``attn.bias`` / ``attn.masked_bias``; they are not weights. Weights are
read from safetensors when present (no pickle at all), else from ``pytorch_model.bin`` with a weights-only
load; an ``*.index.json`` names the shards of a sharded checkpoint.

``save_hf`` writes the GPTBigCode layout, a ``generation_config.json`` (bos/eos/pad ids; ``max_length`` the
context, so that a default ``generate`` or ``pipeline`` call stops there instead of running out of position
embeddings), and the tokenizer files transformers' ``AutoTokenizer`` reads (a ``PreTrainedTokenizerFast``):
``tokenizer.json`` carries the BPE itself; ``tokenizer_config.json`` and ``special_tokens_map.json`` name
``<|endoftext|>`` as bos/eos/unk and the FIM tokens as additional special tokens, as bigcode's uploads do, and
the FIM pad token as the pad token, padding on the left (batched generation).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer

from santacoder.checkpoints.layouts.base import IGNORED_SUFFIXES, LM_HEAD, SUPPORTED, Checkpoint, drop_tied_head
from santacoder.checkpoints.safe_load import safe_torch_load
from santacoder.checkpoints.storage import TMP_SUFFIX, write_atomically
from santacoder.config import GPTConfig
from santacoder.errors import ConfigError, is_disk_full, out_of_space
from santacoder.model import GPT
from santacoder.text.tokenizer import CodeTokenizer

LAYOUT = "gpt_bigcode"
SANTACODER_LAYOUT = "santacoder"
SANTACODER_ARCHITECTURE = "GPT2LMHeadCustomModel"
# In the order transformers prefers them.
WEIGHT_NAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
# transformers' names for the tanh approximation of GELU, the activation our MLP computes.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_fast", "gelu_new")
# SantaCoder's <|endoftext|> id, written to config.json when no tokenizer says otherwise.
SANTACODER_EOS_ID = 49152
# The original santacoder's Conv1D weights: transposed to nn.Linear's [out, in].
_CONV1D = re.compile(r"transformer\.h\.\d+\.(attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")
_Q_KV = re.compile(r"(transformer\.h\.\d+\.attn)\.(q_attn|kv_attn)\.(weight|bias)")


# --- reading ---------------------------------------------------------------------------------------------


def is_hf_file(path: Path) -> bool:
    """Whether ``path`` is a file of a Hugging Face directory (which then stands for its directory)."""
    name = path.name
    return name == "config.json" or name in WEIGHT_NAMES or name.endswith((".safetensors", ".bin", ".index.json"))


def open_checkpoint(directory: Path) -> Checkpoint:
    """The checkpoint of a directory holding ``config.json``, in either layout (reads no weights)."""
    config_path = directory / "config.json"
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{str(config_path)!r} is not a readable JSON model config: {e}") from e
    if not isinstance(hf, dict):
        raise ConfigError(f"{str(config_path)!r} must hold a JSON object (a Hugging Face model config)")
    layout, label, multi_query = _layout(hf, config_path)
    config = gpt_config(hf, f"{label} config {str(config_path)!r}", multi_query)
    files = weight_files(directory)
    source = f"{label} directory {str(directory)!r}"
    tied = bool(hf.get("tie_word_embeddings", True))

    def read_weights() -> dict[str, torch.Tensor]:
        weights = {}
        for name, tensor in load_weights(files).items():
            if name.endswith(IGNORED_SUFFIXES):
                continue
            if not name.startswith(("transformer.", "lm_head.")):
                name = "transformer." + name  # saved from the bare model (no LM head wrapper)
            weights[name] = tensor
        if layout == SANTACODER_LAYOUT:
            weights = santacoder_weights(weights, source)
        return drop_tied_head(weights, source, tied_flag=tied)

    return Checkpoint(layout, directory, config, stored_dtype(files), read_weights)


def _layout(hf: dict, config_path: Path) -> tuple[str, str, bool]:
    """``(layout, its name in messages, multi_query)`` of a config.json, or a ConfigError for other models."""
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if model_type == "gpt_bigcode" or "GPTBigCodeForCausalLM" in architectures:
        if model_type != "gpt_bigcode":
            raise ConfigError(
                f"GPTBigCode config {str(config_path)!r}: model_type is {model_type!r}, expected 'gpt_bigcode'"
            )
        return LAYOUT, "GPTBigCode", bool(hf.get("multi_query", True))
    if SANTACODER_ARCHITECTURE in architectures or "attention_head_type" in hf:
        head_type = hf.get("attention_head_type", "multiquery")
        if head_type != "multiquery":
            raise ConfigError(
                f"santacoder config {str(config_path)!r}: attention_head_type={head_type!r} is not supported; this "
                "layout is read for SantaCoder's multi-query models ('multiquery'). Convert other models to "
                "transformers' GPTBigCode first."
            )
        return SANTACODER_LAYOUT, "santacoder", True
    raise ConfigError(
        f"{str(config_path)!r} describes model_type={model_type!r} (architectures {architectures}), which is "
        f"neither transformers' GPTBigCode nor the original santacoder model; pass {SUPPORTED}"
    )


def gpt_config(hf: dict, source: str, multi_query: bool) -> GPTConfig:
    """Our GPTConfig from GPT-2-family config.json fields, rejecting options whose math differs from our model."""
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


def santacoder_weights(weights: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """GPT2LMHeadCustomModel's tensors (``transformer.``-prefixed) in this project's (GPTBigCode's) layouts."""
    out: dict[str, torch.Tensor] = {}
    q_parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights.items():
        match = _Q_KV.fullmatch(name)
        if match:
            prefix, proj, kind = match.groups()
            q_parts.setdefault(f"{prefix}.c_attn.{kind}", {})[proj] = tensor
        elif _CONV1D.fullmatch(name):
            out[name] = _transpose(tensor, name, source)
        else:
            out[name] = tensor
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
        out[fused] = torch.cat([q, kv], dim=0)  # rows [queries | key | value]
    return out


def _transpose(tensor: torch.Tensor, name: str, source: str) -> torch.Tensor:
    if tensor.dim() != 2:
        raise ConfigError(f"{source}: {name} should be a 2-D Conv1D weight but has shape {tuple(tensor.shape)}")
    return tensor.t()


def weight_files(directory: Path) -> list[Path]:
    """The weight files of ``directory`` (all shards of a sharded checkpoint), or a ConfigError."""
    for name in WEIGHT_NAMES:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            shards = list(dict.fromkeys(weight_map.values()))  # unique, in order of appearance
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"{str(path)!r} is not a valid shard index (a JSON object with 'weight_map'): {e}") from e
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise ConfigError(f"shard index {str(path)!r} names files that are missing: {missing}")
        return [directory / s for s in shards]
    raise ConfigError(f"{str(directory)!r} has a config.json but no weights: expected one of {', '.join(WEIGHT_NAMES)}")


@contextlib.contextmanager
def _safetensors(path: Path) -> Iterator:
    """``safe_open(path)``, turning a truncated or foreign file (at open or at a read) into a ConfigError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{str(path)!r} is truncated or not a safetensors file: {e}") from e


def load_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of ``files``, by name (on CPU, in their stored dtype)."""
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        if path.name.endswith(".safetensors"):
            with _safetensors(path) as f:
                part = {name: f.get_tensor(name) for name in f.keys()}
        else:
            part = safe_torch_load(path)
            if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
                raise ConfigError(f"{str(path)!r} is not a state dict (a mapping of names to tensors)")
        tensors.update(part)
    return tensors


def stored_dtype(files: list[Path]) -> torch.dtype:
    """The most common floating dtype of the weights, read from the headers only where possible."""
    counts: Counter[torch.dtype] = Counter()
    path = files[0]  # shards of one checkpoint share a dtype
    if path.name.endswith(".safetensors"):
        with _safetensors(path) as f:
            counts.update(_SAFETENSORS_DTYPES.get(f.get_slice(name).get_dtype()) for name in f.keys())
    else:
        counts.update(t.dtype for t in load_weights([path]).values())  # memory-mapped: reads the pickle only
    counts.pop(None, None)
    floating = {d: n for d, n in counts.items() if d.is_floating_point}
    return max(floating, key=floating.get) if floating else torch.float32


# --- writing ---------------------------------------------------------------------------------------------


def save_hf(model: GPT, out_dir: str | Path, tokenizer: CodeTokenizer | None = None) -> Path:
    """Write ``model`` as a transformers GPTBigCode directory; ``AutoModelForCausalLM.from_pretrained`` loads it.

    Writes ``config.json``, ``generation_config.json`` and ``model.safetensors`` (the tied ``lm_head`` is left
    out: transformers ties it back to ``transformer.wte``), and with ``tokenizer`` the files ``AutoTokenizer``
    reads. Returns ``out_dir``.
    """
    if not isinstance(model, GPT):
        raise ConfigError(f"save_hf expects a santacoder GPT, got {type(model).__name__}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"save_hf output {str(out_dir)!r} exists and is not a directory")
    if tokenizer is not None:
        tokenizer.check_fits(model.config.vocab_size)  # before anything is written
    from transformers import GenerationConfig  # here: only exports need transformers (a second to import)

    out_dir.mkdir(parents=True, exist_ok=True)
    bos_id = eos_id = SANTACODER_EOS_ID if model.config.vocab_size > SANTACODER_EOS_ID else None
    # Without a tokenizer, eos doubles as pad (GPT-2's convention): transformers needs some pad id to fill the rows
    # that finish early in a batch. A CodeTokenizer always has a FIM pad (it refuses tokenizers without the FIM
    # tokens), and that is the better pad: training gives it no label, so the model never learns to produce it.
    pad_id = eos_id
    if tokenizer is not None:
        write_tokenizer_files(tokenizer, out_dir, model_max_length=model.config.n_positions)
        bos_id = eos_id = tokenizer.eod_id
        pad_id = tokenizer.fim_pad_id
    state = {
        name: t.detach().to("cpu").contiguous()
        for name, t in model.state_dict().items()
        if name != LM_HEAD  # safetensors stores no shared tensors; transformers re-ties the head
    }
    # Each file replaced whole (a temporary file, fsync, rename), the weights first and config.json last: a kill
    # leaves every file either as it was or as it is now, and a new export no config.json until the rest is there
    advice = "nothing of the export was replaced half-written; free space there and export again"
    weights = out_dir / "model.safetensors"
    tmp = weights.with_name(f".{weights.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        save_file(state, str(tmp), metadata={"format": "pt"})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, weights)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise out_of_space(e, "model.safetensors", out_dir, advice) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # max_length is the context. Without it, transformers' text-generation pipeline asks for max_new_tokens=256 by
    # default and runs past n_positions into an IndexError; it adds that default only where the model's generation
    # config sets no max_length, so this bounds its default call (and generate()'s, otherwise 20 new tokens). The
    # price: a call that passes max_new_tokens gets transformers' notice that both are set; max_new_tokens wins.
    generation = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, max_length=model.config.n_positions
    )
    text = {"generation_config.json": generation.to_json_string(use_diff=True)}
    config = hf_config_dict(model.config, model.transformer.wte.weight.dtype, bos_id, eos_id, pad_id)
    text["config.json"] = json.dumps(config, indent=2) + "\n"
    for name, content in text.items():
        write_atomically(out_dir / name, lambda f, c=content: f.write(c.encode("utf-8")), what=name, advice=advice)
    # safetensors writes through a private (0600) temporary file, which would leave the weights the one file of the
    # export that others cannot read: give them the mode config.json was written with (the umask's)
    shutil.copymode(out_dir / "config.json", weights)
    return out_dir


def hf_config_dict(
    config: GPTConfig, dtype: torch.dtype, bos_id: int | None, eos_id: int | None, pad_id: int | None
) -> dict:
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
        "pad_token_id": pad_id,
        # transformers >= 5 reads "dtype", earlier versions "torch_dtype"
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
    }


def write_tokenizer_files(tokenizer: CodeTokenizer, out_dir: Path, model_max_length: int) -> None:
    """Write the tokenizer files into ``out_dir``: ``<|endoftext|>`` is bos and eos, the FIM pad the pad."""
    # A copy, because CodeTokenizer sets encode_special_tokens on its Tokenizer (corpus text that looks like
    # "<fim-prefix>" stays text); in transformers, prompts must be able to contain the FIM tokens.
    copy = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    copy.encode_special_tokens = False
    copy.save(str(out_dir / "tokenizer.json"))
    names = tokenizer.fim_tokens
    special = {
        "bos_token": names.eod,
        "eos_token": names.eod,
        "unk_token": names.eod,
        # The FIM pad carries no label in training, so padding with it never teaches or asks for anything.
        "pad_token": names.pad,
        "additional_special_tokens": [names.prefix, names.middle, names.suffix, names.pad],
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": model_max_length,
        # A decoder-only model continues the last token of each row: batched prompts are padded on the left
        # (with the attention mask), so `tokenizer(prompts, padding=True)` is ready for generate().
        "padding_side": "left",
        "add_prefix_space": False,
        # Decoding must give back code exactly: no space "clean-up" around punctuation.
        "clean_up_tokenization_spaces": False,
    }
    for name, content in (("tokenizer_config.json", tokenizer_config), ("special_tokens_map.json", special)):
        (out_dir / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
