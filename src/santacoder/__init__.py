"""Train SantaCoder-style code models: GPT-2 with multi-query attention and fill-in-the-middle."""

from santacoder.completion import complete, infill, stream_generate
from santacoder.configs import compose
from santacoder.errors import ConfigError
from santacoder.generation import generate
from santacoder.interop import load, read_checkpoint_config, save_hf
from santacoder.kv_cache import KVCache
from santacoder.model import GPT, GPTConfig
from santacoder.tokenizer import CodeTokenizer, FIMTokens, load_tokenizer, train_tokenizer

__all__ = [
    "GPT",
    "GPTConfig",
    "CodeTokenizer",
    "KVCache",
    "ConfigError",
    "FIMTokens",
    "complete",
    "compose",
    "generate",
    "infill",
    "load",
    "load_tokenizer",
    "read_checkpoint_config",
    "save_hf",
    "stream_generate",
    "train_tokenizer",
]
