"""Byte-level BPE tokenizers with the end-of-text and fill-in-the-middle special tokens.

SantaCoder's tokenizer names its FIM tokens with hyphens (``<fim-prefix>``); StarCoder's with underscores
(``<fim_prefix>``). ``FIMTokens`` holds the names, so either works.

``CodeTokenizer`` adds what FIM needs on top of a ``tokenizers.Tokenizer``: exact byte-level decoding and
encoding. A byte-level BPE token is a sequence of bytes, so any token sequence -- even one cut in the middle
of a multi-byte character at the edge of a packed sample -- decodes to exact bytes, and those bytes encode
back (invalid UTF-8 bytes as single-byte tokens). Text never passes through a lossy UTF-8 replacement or
Hugging Face's ``clean_up_tokenization_spaces``, so FIM never alters code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from santacoder.errors import ConfigError


@dataclass(frozen=True)
class FIMTokens:
    """Names of the special tokens. Defaults are SantaCoder's; ``FIMTokens.starcoder()`` gives StarCoder's."""

    eod: str = "<|endoftext|>"
    prefix: str = "<fim-prefix>"
    middle: str = "<fim-middle>"
    suffix: str = "<fim-suffix>"
    pad: str = "<fim-pad>"

    @classmethod
    def starcoder(cls) -> FIMTokens:
        return cls(prefix="<fim_prefix>", middle="<fim_middle>", suffix="<fim_suffix>", pad="<fim_pad>")

    def as_list(self) -> list[str]:
        # SantaCoder's order of additional special tokens: EOD, prefix, middle, suffix, pad
        return [self.eod, self.prefix, self.middle, self.suffix, self.pad]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (used by ByteLevel)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}
# Runs of bytes that are not valid UTF-8, as Python's surrogateescape error handler represents them.
_ESCAPED_BYTES = re.compile("([\udc80-\udcff]+)")


class CodeTokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` plus the ids of the EOD and FIM tokens."""

    def __init__(self, tokenizer: Tokenizer, fim_tokens: FIMTokens = FIMTokens(), source: str = "<memory>"):
        self.tokenizer = tokenizer
        self.fim_tokens = fim_tokens
        self.source = source
        # Text in the corpus that looks like a special token ("<|endoftext|>" inside a string literal) must
        # stay text: only the pipeline itself inserts special tokens.
        self.tokenizer.encode_special_tokens = True
        ids = {}
        for field, name in vars(fim_tokens).items():
            token_id = tokenizer.token_to_id(name)
            if token_id is None:
                raise ConfigError(
                    f"tokenizer {source} has no special token {name!r} (FIM token '{field}'). SantaCoder names "
                    "them with hyphens (<fim-prefix>), StarCoder with underscores (<fim_prefix>): set "
                    "data.fim_tokens to match the tokenizer."
                )
            ids[field] = token_id
        self.eod_id: int = ids["eod"]
        self.fim_prefix_id: int = ids["prefix"]
        self.fim_middle_id: int = ids["middle"]
        self.fim_suffix_id: int = ids["suffix"]
        self.fim_pad_id: int = ids["pad"]
        self._id_to_bytes = self._build_byte_table()
        self._fingerprint: str | None = None

    def _build_byte_table(self) -> list[bytes]:
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        table: list[bytes] = [b""] * (max(vocab.values()) + 1)
        special = {t.content for t in self.tokenizer.get_added_tokens_decoder().values() if t.special}
        for token, token_id in vocab.items():
            if token in special:
                table[token_id] = token.encode("utf-8")
            elif all(c in _CHAR_TO_BYTE for c in token):
                table[token_id] = bytes(_CHAR_TO_BYTE[c] for c in token)
            else:
                raise ConfigError(
                    f"tokenizer {self.source} is not a byte-level BPE (token {token!r} is not byte-encoded); "
                    "FIM needs exact byte round trips, as SantaCoder's and StarCoder's tokenizers give."
                )
        self._single_byte_ids = [vocab.get(_BYTE_TO_CHAR[b]) for b in range(256)]
        if None in self._single_byte_ids:
            raise ConfigError(f"tokenizer {self.source} lacks some single-byte tokens; it cannot encode all bytes")
        return table

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> set[int]:
        return {self.eod_id, self.fim_prefix_id, self.fim_middle_id, self.fim_suffix_id, self.fim_pad_id}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings inside the text are encoded as ordinary text."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # the _fast variant skips character offsets: same ids, a quarter less memory and time
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special tokens included, bytes that are not valid UTF-8 replaced by U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes that ``ids`` stand for."""
        return b"".join(map(self._id_to_bytes.__getitem__, ids))  # map: twice a generator's speed on long documents

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids whose ``decode_bytes`` is exactly ``data``, even when ``data`` is not valid UTF-8."""
        text = data.decode("utf-8", errors="surrogateescape")
        ids: list[int] = []
        for i, part in enumerate(_ESCAPED_BYTES.split(text)):
            if i % 2:  # an invalid byte run (a character cut at a sample edge): one token per byte
                ids.extend(self._single_byte_ids[ord(c) - 0xDC00] for c in part)
            elif part:
                ids.extend(self.encode(part))
        return ids

    def check_fits(self, vocab_size: int) -> None:
        """A ConfigError unless a model with ``vocab_size`` embedding rows has a row for every token of this one."""
        if len(self) > vocab_size:
            raise ConfigError(
                f"tokenizer {self.source} has {len(self)} tokens but the model's vocab_size is {vocab_size}; they do "
                "not belong together"
            )

    def fingerprint(self) -> str:
        """A short hash of the tokenizer's content, for cache keys and checkpoints; computed once (the
        tokenizer does not change after construction, and a 49k vocabulary serializes to megabytes)."""
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self.tokenizer.to_str().encode("utf-8")).hexdigest()[:16]
        return self._fingerprint

    def to_dict(self) -> dict:
        """Plain values that ``CodeTokenizer.from_dict`` rebuilds it from (checkpoints carry their tokenizer)."""
        return {"json": self.tokenizer.to_str(), "fim_tokens": dict(vars(self.fim_tokens))}

    @classmethod
    def from_dict(cls, stored: dict, source: str = "<memory>") -> CodeTokenizer:
        try:
            tokenizer = Tokenizer.from_str(stored["json"])
            fim_tokens = FIMTokens(**stored["fim_tokens"])
        except Exception as e:
            raise ConfigError(f"the tokenizer stored in {source} is unreadable ({type(e).__name__}: {e})") from None
        return cls(tokenizer, fim_tokens, source=source)

    @classmethod
    def from_file(cls, path: str | Path, fim_tokens: FIMTokens | None = None) -> CodeTokenizer:
        """A ``tokenizer.json`` (or a directory holding one, e.g. SantaCoder's or StarCoder's). A tokenizer inside a
        checkpoint or run directory is read by ``santacoder.load_tokenizer``, which knows checkpoints.

        Without ``fim_tokens`` the FIM token names are detected: SantaCoder's hyphens, then StarCoder's underscores.
        """
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(
                f"tokenizer file {str(path)!r} does not exist; pass a tokenizer.json or leave data.tokenizer null"
            )
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:
            raise ConfigError(f"{str(path)!r} is not a readable tokenizers JSON file: {e}") from e
        if fim_tokens is None:
            fim_tokens = FIMTokens()
            if tokenizer.token_to_id(fim_tokens.prefix) is None and tokenizer.token_to_id("<fim_prefix>") is not None:
                fim_tokens = FIMTokens.starcoder()
        return cls(tokenizer, fim_tokens, source=str(path))

    def save(self, path: str | Path) -> None:
        # written by Python, not tokenizers' own save: a full disk then raises OSError(ENOSPC), which callers
        # can tell from other failures (tokenizers raises a bare Exception)
        Path(path).write_text(self.tokenizer.to_str(pretty=True), encoding="utf-8")


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, fim_tokens: FIMTokens = FIMTokens(), min_frequency: int = 2
) -> CodeTokenizer:
    """Train a byte-level BPE like SantaCoder's: digits split one by one, then GPT-2's byte-level regex."""
    if vocab_size < 256 + len(fim_tokens.as_list()):
        raise ConfigError(f"data.vocab_size={vocab_size} must be at least 261 (256 bytes + 5 special tokens)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=fim_tokens.as_list(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return CodeTokenizer(tokenizer, fim_tokens)
