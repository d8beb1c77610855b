"""Bring your own SantaCoder weights: load and export Megatron-LM, Hugging Face and original santacoder layouts.

``load(path)`` detects the layout and returns a ``GPT``; ``save_hf(model, out_dir)`` writes a directory that
transformers' ``AutoModelForCausalLM`` loads; ``read_checkpoint_config(path)`` reads only the shape.

Modules:

- ``loading``: layout detection, the weight checks, building the ``GPT``, and the public functions
  (``load``, ``read_checkpoint_config``, ``inspect_checkpoint``, ``convert``);
- ``hf``: Hugging Face directories, transformers' GPTBigCode and the original bigcode/santacoder upload
  (config.json, weight files, tokenizer files; ``save_hf``);
- ``megatron``: Megatron-LM checkpoints (tensor- and pipeline-parallel size 1);
- ``safe_unpickle``: ``safe_torch_load``, torch files read without running code from them.

``.ckpt`` files of this project are read and written through ``santacoder.checkpoint``, which owns their format.
"""

# Everything through ``loading``, which must be imported before the format modules (see the note there).
from santacoder.interop.loading import (
    LAYOUTS,
    CheckpointInfo,
    convert,
    inspect_checkpoint,
    load,
    read_checkpoint_config,
    save_checkpoint,
    save_hf,
)
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
