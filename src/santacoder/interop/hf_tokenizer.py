"""Tokenizer files that transformers' ``AutoTokenizer`` reads (a ``PreTrainedTokenizerFast``).

``tokenizer.json`` carries the BPE itself; ``tokenizer_config.json`` and ``special_tokens_map.json`` name
``<|endoftext|>`` as bos/eos/unk and the FIM tokens as additional special tokens, as bigcode's uploads do.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from santacoder.errors import ConfigError
from santacoder.model import GPTConfig
from santacoder.tokenizer import CodeTokenizer, load_tokenizer


def checked_tokenizer(tokenizer: CodeTokenizer | str | Path, config: GPTConfig) -> CodeTokenizer:
    """``tokenizer`` (loaded if a path), or a ConfigError if its ids do not fit the model's vocabulary."""
    if not isinstance(tokenizer, CodeTokenizer):
        tokenizer = load_tokenizer(tokenizer)
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(
            f"tokenizer {tokenizer.source} has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{config.vocab_size}; they do not belong together"
        )
    return tokenizer


def write_tokenizer_files(tokenizer: CodeTokenizer, out_dir: Path, model_max_length: int) -> int:
    """Write the tokenizer files into ``out_dir``; returns the id of ``<|endoftext|>`` (bos and eos)."""
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
        "additional_special_tokens": [names.prefix, names.middle, names.suffix, names.pad],
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        # Decoding must give back code exactly: no space "clean-up" around punctuation.
        "clean_up_tokenization_spaces": False,
    }
    for name, content in (("tokenizer_config.json", tokenizer_config), ("special_tokens_map.json", special)):
        (out_dir / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return tokenizer.eod_id
