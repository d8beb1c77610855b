"""The GPT (``gpt``), its attention backends (``attention``), the language-model loss (``loss``) and the decoding
cache (``kv_cache``). ``GPTConfig`` lives one layer down, in ``santacoder.config``, and is re-exported here."""

from santacoder.config import PRESETS, SHAPE_FIELDS, GPTConfig
from santacoder.model.gpt import GPT, MLP, Block, CausalSelfAttention
from santacoder.model.kv_cache import KVCache

__all__ = ["GPT", "MLP", "PRESETS", "SHAPE_FIELDS", "Block", "CausalSelfAttention", "GPTConfig", "KVCache"]
