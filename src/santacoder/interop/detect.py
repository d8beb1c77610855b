"""Which of the supported layouts a path holds, and opening it with the right reader.

- a directory with ``config.json``: transformers GPTBigCode (``model_type: gpt_bigcode``) or the original
  santacoder upload (``GPT2LMHeadCustomModel`` / ``attention_head_type``); a weight file or the config.json
  inside such a directory stands for the directory;
- a Megatron-LM save, iteration or rank directory, or a ``model_optim_rng.pt`` / ``model_rng.pt`` file;
- any other torch file: a Lightning checkpoint of this project, unless its pickle asks for Megatron's
  ``args`` (then it is a renamed Megatron file).
"""

from __future__ import annotations

from pathlib import Path

from santacoder.errors import ConfigError
from santacoder.interop import hf, lightning_ckpt, megatron, santacoder_custom
from santacoder.interop.assemble import Checkpoint
from santacoder.interop.hf_files import WEIGHT_NAMES, read_config_json
from santacoder.interop.safe_unpickle import is_megatron_global, pickled_globals

LAYOUTS = {
    lightning_ckpt.LAYOUT: "checkpoint of this project (Lightning .ckpt)",
    hf.LAYOUT: "Hugging Face transformers GPTBigCode directory",
    santacoder_custom.LAYOUT: "original bigcode/santacoder directory (GPT2LMHeadCustomModel)",
    megatron.LAYOUT: "Megatron-LM checkpoint",
}
SUPPORTED = (
    "a .ckpt of this project, a Hugging Face GPTBigCode or original santacoder directory (config.json + "
    "weights), or a Megatron-LM checkpoint (save directory, iter_*/release directory, or model_optim_rng.pt)"
)


def _is_hf_file(path: Path) -> bool:
    name = path.name
    return name == "config.json" or name in WEIGHT_NAMES or name.endswith((".safetensors", ".bin", ".index.json"))


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path`` in whichever supported layout it is (reads configs and headers, not weights)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"checkpoint path {str(path)!r} does not exist; pass {SUPPORTED}")
    if path.is_file() and _is_hf_file(path) and (path.parent / "config.json").is_file():
        path = path.parent
    if path.is_dir():
        if (path / "config.json").is_file():
            return _open_hf_directory(path)
        if megatron.looks_like_megatron(path):
            return megatron.open_checkpoint(path)
        raise ConfigError(f"directory {str(path)!r} has no config.json and no Megatron-LM checkpoint; pass {SUPPORTED}")
    if path.name.endswith(".safetensors"):
        raise ConfigError(
            f"{str(path)!r} is a bare safetensors file: it holds weights but no model config. Pass the directory "
            "holding it together with its config.json."
        )
    if path.name in megatron.MODEL_FILES or any(is_megatron_global(g) for g in pickled_globals(path)):
        return megatron.open_checkpoint(path)
    return lightning_ckpt.open_checkpoint(path)


def _open_hf_directory(directory: Path) -> Checkpoint:
    config = read_config_json(directory)
    architectures = config.get("architectures") or []
    if config.get("model_type") == "gpt_bigcode" or "GPTBigCodeForCausalLM" in architectures:
        return hf.open_checkpoint(directory)
    if santacoder_custom.is_santacoder_config(config):
        return santacoder_custom.open_checkpoint(directory)
    raise ConfigError(
        f"{str(directory / 'config.json')!r} describes model_type={config.get('model_type')!r} "
        f"(architectures {architectures}), which is neither transformers' GPTBigCode nor the original santacoder "
        f"model; pass {SUPPORTED}"
    )
