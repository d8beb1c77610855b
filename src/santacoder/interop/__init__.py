"""Bring your own SantaCoder weights: load and export Megatron-LM, Hugging Face and original santacoder layouts.

``load(path)`` detects the layout and returns a ``GPT``; ``save_hf(model, out_dir)`` writes a directory that
transformers' ``AutoModelForCausalLM`` loads; ``read_checkpoint_config(path)`` reads only the shape.
"""

from santacoder.interop.api import CheckpointInfo, convert, inspect_checkpoint, load, read_checkpoint_config
from santacoder.interop.detect import LAYOUTS
from santacoder.interop.hf import save_hf
from santacoder.interop.lightning_ckpt import save_checkpoint
from santacoder.interop.safe_unpickle import safe_torch_load

__all__ = [
    "LAYOUTS",
    "CheckpointInfo",
    "convert",
    "inspect_checkpoint",
    "load",
    "read_checkpoint_config",
    "safe_torch_load",
    "save_checkpoint",
    "save_hf",
]
