"""Train SantaCoder-style code models: GPT-2 with multi-query attention and fill-in-the-middle."""

from santacoder.errors import ConfigError
from santacoder.interop import load, read_checkpoint_config, save_hf
from santacoder.model import GPT, GPTConfig
from santacoder.tokenizer import CodeTokenizer, FIMTokens, load_tokenizer, train_tokenizer

__all__ = [
    "GPT",
    "GPTConfig",
    "CodeTokenizer",
    "ConfigError",
    "FIMTokens",
    "load",
    "load_tokenizer",
    "read_checkpoint_config",
    "save_hf",
    "train_tokenizer",
]
