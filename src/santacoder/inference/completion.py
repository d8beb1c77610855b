"""Text in, text out: ``complete`` a prompt, ``infill`` between a prefix and a suffix, and ``stream_generate``
text as it is produced.

Text is streamed byte-exactly: token bytes are decoded incrementally, so a character split across tokens is
emitted once whole, never as a replacement character. Stop strings cut the text at the character.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence

from santacoder.errors import ConfigError
from santacoder.inference.generation import generate_stream
from santacoder.inference.stopping import first_stop
from santacoder.model.gpt import GPT
from santacoder.text.fim import fim_prompt
from santacoder.text.tokenizer import CodeTokenizer

INFILL_MODES = ("psm", "spm")
FILL_MARKER = "<FILL-HERE>"  # where the gap is, in the CLI's files and the demo's code box (as in the SantaCoder demo)
# Code averages 3 to 4 bytes a token of a code BPE: a prompt of more than 32 bytes for each position of the context
# does not fit it (only a text made of the vocabulary's longest tokens could). Checking that bound before tokenizing
# refuses megabytes at once, where tokenizing them first took a minute and gigabytes of memory only to refuse them.
PROMPT_BYTES_PER_TOKEN = 32


def check_prompt_size(n_positions: int, *parts: str) -> None:
    """Refuse a prompt (its ``parts``: the text, or a prefix and a suffix) too long in bytes for a context of
    ``n_positions`` tokens, before it is tokenized: a ``ConfigError`` saying its size and the bound."""
    bound = n_positions * PROMPT_BYTES_PER_TOKEN
    size = sum(len(part.encode("utf-8", "surrogatepass")) for part in parts)
    if size > bound:
        raise ConfigError(
            f"the prompt is {size:,} bytes; a model with a context of {n_positions} tokens reads at most "
            f"{bound:,} ({PROMPT_BYTES_PER_TOKEN} bytes a token, far more than code averages): shorten it"
        )


def stream_generate(
    model: GPT,
    tokenizer: CodeTokenizer,
    prompt: str | Sequence[int],
    max_new_tokens: int = 128,
    *,
    stop: Sequence[str] = (),
    **sampling,
) -> Iterator[str]:
    """The text after ``prompt`` (a string, or token ids), piece by piece as it is produced, until
    ``<|endoftext|>``, a ``stop`` string (not included) or ``max_new_tokens``. ``sampling``: ``temperature``,
    ``top_k``, ``top_p``, ``seed`` (see ``santacoder.inference.generation.generate``)."""
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    if not ids:
        raise ValueError("the prompt is empty: give at least one character")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""  # produced so far (kept only while stop strings need it)
    sent = 0
    longest_stop = max((len(s) for s in stop), default=0)
    for token in generate_stream(model, [ids], max_new_tokens, eos_id=tokenizer.eod_id, **sampling):
        token_id = int(token[0])
        if token_id == tokenizer.eod_id:
            break
        text += decoder.decode(tokenizer.decode_bytes([token_id]))
        cut = first_stop(text, stop)
        if cut is not None:
            if cut > sent:
                yield text[sent:cut]
            return
        # hold back what could still become the start of a stop string
        safe = len(text) - (longest_stop - 1) if longest_stop else len(text)
        if safe > sent:
            yield text[sent:safe]
            sent = safe
    text += decoder.decode(b"", final=True)
    if len(text) > sent:
        yield text[sent:]


def complete(
    model: GPT,
    tokenizer: CodeTokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 128,
    stop: Sequence[str] = (),
    **sampling,
) -> str:
    """The continuation of ``prompt``: the model's text up to ``<|endoftext|>`` or the first ``stop`` string."""
    return "".join(stream_generate(model, tokenizer, prompt, max_new_tokens, stop=stop, **sampling))


def infill_prompt(
    tokenizer: CodeTokenizer, prefix: str, suffix: str, mode: str = "psm", max_tokens: int | None = None
) -> list[int]:
    """The ids of a fill-in-the-middle prompt, laid out exactly as training lays out a FIM segment.

    With ``max_tokens``, a prompt that would be longer keeps the end of the prefix and the start of the suffix
    (the code nearest the gap): each gets half the room, and what one does not need goes to the other."""
    if mode not in INFILL_MODES:
        raise ValueError(f"mode={mode!r} must be one of {INFILL_MODES}")

    def encode(part: str) -> list[int]:  # each part on its own, as training encodes them
        return tokenizer.encode_bytes(part.encode("utf-8"))

    before, after = encode(prefix), encode(suffix)
    if max_tokens is not None:
        room = max_tokens - 3  # the three FIM tokens
        if room < 2:
            raise ValueError(f"max_tokens={max_tokens} leaves no room for a prefix and a suffix")
        if len(before) + len(after) > room:
            keep_after = min(len(after), max(room // 2, room - len(before)))
            keep_before = room - keep_after
            before, after = before[len(before) - keep_before :], after[:keep_after]
    return fim_prompt(before, after, tokenizer, spm=mode == "spm")


def infill(
    model: GPT,
    tokenizer: CodeTokenizer,
    prefix: str,
    suffix: str,
    *,
    mode: str = "psm",
    max_new_tokens: int = 128,
    stop: Sequence[str] = (),
    **sampling,
) -> str:
    """The middle between ``prefix`` and ``suffix``: what the model writes after a FIM prompt (PSM or SPM),
    up to ``<|endoftext|>``."""
    ids = infill_prompt(tokenizer, prefix, suffix, mode)
    return "".join(stream_generate(model, tokenizer, ids, max_new_tokens, stop=stop, **sampling))
