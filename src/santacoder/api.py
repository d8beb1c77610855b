"""The public facade: what ``import santacoder`` offers, re-exported by ``santacoder/__init__.py``.

    llm = santacoder.LLM.load("logs/train/runs/<run>")          # any checkpoint layout; its tokenizer with it
    llm.complete("def fibonacci(n):\n")
    llm.infill("def add(a, b):\n    ", "\n    return c\n")

The functions underneath (``load``, ``load_tokenizer``, ``generate``, ``complete``, ``infill``, ...) are here too,
for code that keeps model and tokenizer apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from santacoder.checkpoints.loading import load, load_tokenizer, read_checkpoint_config, save_hf
from santacoder.conf.compose import compose
from santacoder.config import GPTConfig
from santacoder.errors import ConfigError
from santacoder.inference.completion import complete, infill, stream_generate
from santacoder.inference.generation import generate
from santacoder.model.gpt import GPT
from santacoder.model.kv_cache import KVCache
from santacoder.text.tokenizer import CodeTokenizer, FIMTokens, train_tokenizer

__all__ = [
    "GPT",
    "LLM",
    "CodeTokenizer",
    "ConfigError",
    "FIMTokens",
    "GPTConfig",
    "KVCache",
    "complete",
    "compose",
    "generate",
    "infill",
    "load",
    "load_tokenizer",
    "attribute",
    "build_index",
    "read_checkpoint_config",
    "save_hf",
    "stream_generate",
    "train_tokenizer",
]


def attribute(snippet: str | list[int], index: str | Path, min_len: int = 32):
    """Where ``snippet`` (code, or ids of the model's tokenizer) could come from in the data a model trained on:
    verbatim spans with their documents (repository, path, license), similar documents, and a one-line
    ``verdict``. ``index``: a directory ``santacoder index`` wrote (or an opened ``AttributionIndex``). Needs the
    ``attribution`` extra."""
    from santacoder.search.commands import open_index, search_modules

    attribution, _ = search_modules()
    if not isinstance(index, attribution.AttributionIndex):
        index = open_index(str(index))
    return attribution.attribute(snippet, index, min_len=min_len)


def build_index(source: str | Path, out: str | Path | None = None) -> dict:
    """The attribution index of what a run directory or a prepared directory trained on (``santacoder index``)."""
    from santacoder.search.commands import search_modules

    _, index = search_modules()
    return index.build_index(Path(source), Path(out) if out is not None else None)


class LLM:
    """A model and its tokenizer, used together: text in, text out.

    ``sampling`` keywords of every method: ``max_new_tokens``, ``temperature`` (0: greedy, the default), ``top_k``,
    ``top_p``, ``seed`` and ``stop`` strings (see ``santacoder.inference.completion``).
    """

    def __init__(self, model: GPT, tokenizer: CodeTokenizer):
        tokenizer.check_fits(model.config.vocab_size)
        self.model = model.eval()
        self.tokenizer = tokenizer

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        tokenizer: str | Path | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
        attn_impl: str = "auto",
    ) -> LLM:
        """The model at ``path`` (a run directory, a ``.ckpt``, a Hugging Face or Megatron-LM checkpoint: see
        ``load``) with ``tokenizer`` (default: the one the checkpoint carries or has beside it)."""
        model = load(path, device=device, dtype=dtype, attn_impl=attn_impl)
        return cls(model, load_tokenizer(tokenizer if tokenizer is not None else path))

    def complete(self, prompt: str, **sampling) -> str:
        """The continuation of ``prompt``, up to ``<|endoftext|>`` or a ``stop`` string."""
        return complete(self.model, self.tokenizer, prompt, **sampling)

    def infill(self, prefix: str, suffix: str, *, mode: str = "psm", **sampling) -> str:
        """The middle between ``prefix`` and ``suffix`` (fill-in-the-middle, PSM or SPM prompt)."""
        return infill(self.model, self.tokenizer, prefix, suffix, mode=mode, **sampling)

    def stream(self, prompt: str, **sampling) -> Iterator[str]:
        """The continuation of ``prompt`` piece by piece, as it is produced."""
        return stream_generate(self.model, self.tokenizer, prompt, **sampling)

    def save_hf(self, out_dir: str | Path) -> Path:
        """A transformers GPTBigCode directory with the tokenizer beside the weights (see ``save_hf``)."""
        return save_hf(self.model, out_dir, tokenizer=self.tokenizer)

    def __repr__(self) -> str:
        c = self.model.config
        return (
            f"LLM({self.model.num_params():,} parameters, {c.n_layer} layers x {c.n_embd}, "
            f"{'multi-query' if c.multi_query else 'multi-head'}, {len(self.tokenizer)} tokens, "
            f"on {next(self.model.parameters()).device})"
        )
