"""The FIM transform: layouts, lossless permutation, rates, determinism (see santacoder/fim.py)."""

import numpy as np
import pytest

from santacoder.text.fim import fim_layout, fim_sample, fim_segment, undo_fim_segment


def segments(ids: list[int], eod: int) -> list[list[int]]:
    out, cur = [], []
    for t in ids:
        if t == eod:
            out.append(cur)
            cur = []
        else:
            cur.append(t)
    return out + [cur]


@pytest.fixture(scope="module")
def stream(tokenizer, corpus_texts) -> np.ndarray:
    """A token stream like the token store's: documents each followed by <|endoftext|>. Documents are
    pieces of up to 8 lines of real files, so packed samples span several of them."""
    ids = []
    for text in corpus_texts[:40]:
        lines = text.splitlines(keepends=True)
        for i in range(0, len(lines), 8):
            ids += tokenizer.encode("".join(lines[i : i + 8])) + [tokenizer.eod_id]
    return np.asarray(ids, dtype=np.int64)


def packed_samples(stream, n, seq_len=257, start=0):
    return [stream[start + i * seq_len // 2 : start + i * seq_len // 2 + seq_len] for i in range(n)]


def test_every_transformed_segment_has_one_layout(tokenizer, stream):
    seen = {"PSM": 0, "SPM": 0, None: 0}
    for i, sample in enumerate(packed_samples(stream, 200)):
        out = fim_sample(sample, tokenizer, np.random.default_rng(i), fim_rate=0.5, spm_rate=0.5)
        assert out.shape == sample.shape and out.dtype == sample.dtype
        body = out[out != tokenizer.fim_pad_id].tolist()
        # every <|endoftext|> of the sample is kept (up to truncation at the end)
        assert body.count(tokenizer.eod_id) >= sample.tolist().count(tokenizer.eod_id) - 1
        for seg in segments(body, tokenizer.eod_id)[:-1]:  # the last one may be truncated
            seen[fim_layout(seg, tokenizer)] += 1  # raises on a broken layout
    assert min(seen.values()) > 20


def test_undoing_the_permutation_restores_the_text_exactly(tokenizer, stream):
    text = "naïve = 'Grüße, 世界 😀'  # ✓\n" * 3
    doc = tokenizer.encode(text)
    cases = [doc]
    # segments cut at a sample's edges: starting or ending inside a multi-byte character
    cases += [doc[k:] for k in range(1, 12)] + [doc[:k] for k in range(1, 12)]
    cases += [s.tolist() for s in packed_samples(stream, 50)]
    n_spm = n_psm = 0
    for i, seg in enumerate(cases):
        seg = [t for t in seg if t != tokenizer.eod_id]
        for j in range(8):
            rng = np.random.default_rng([i, j])
            out = fim_segment(seg, tokenizer, rng, fim_rate=1.0, spm_rate=0.5)
            layout = fim_layout(out, tokenizer)
            n_spm += layout == "SPM"
            n_psm += layout == "PSM"
            restored = undo_fim_segment(out, tokenizer)
            assert tokenizer.decode_bytes(restored) == tokenizer.decode_bytes(seg)
    assert n_spm > 50 and n_psm > 50


def test_observed_rates_match_configured(tokenizer):
    doc = tokenizer.encode("x = compute(value) + other_value * 3\n" * 30)  # long: empty prefixes are rare
    n = 4000
    fim_rate, spm_rate = 0.3, 0.7
    layouts = [
        fim_layout(fim_segment(doc, tokenizer, np.random.default_rng(i), fim_rate, spm_rate), tokenizer)
        for i in range(n)
    ]
    n_fim = sum(x is not None for x in layouts)
    n_spm = sum(x == "SPM" for x in layouts)
    # binomial: 5 standard deviations
    assert abs(n_fim / n - fim_rate) < 5 * np.sqrt(fim_rate * (1 - fim_rate) / n)
    # a PSM with an empty prefix looks like SPM; at ~1,100 characters that is < 0.2% of PSMs
    assert abs(n_spm / n_fim - spm_rate) < 5 * np.sqrt(spm_rate * (1 - spm_rate) / n_fim) + 0.002


def test_rate_zero_leaves_samples_untouched(tokenizer, stream):
    for sample in packed_samples(stream, 20):
        rng = np.random.default_rng(0)
        out = fim_sample(sample, tokenizer, rng, fim_rate=0.0, spm_rate=0.5)
        np.testing.assert_array_equal(out, sample)


def test_same_seed_same_sample(tokenizer, stream):
    sample = packed_samples(stream, 1)[0]
    a = fim_sample(sample, tokenizer, np.random.default_rng([1, 2, 3]), 0.5, 0.5)
    b = fim_sample(sample, tokenizer, np.random.default_rng([1, 2, 3]), 0.5, 0.5)
    c = fim_sample(sample, tokenizer, np.random.default_rng([1, 2, 4]), 1.0, 0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_growth_is_truncated(tokenizer):
    doc = tokenizer.encode("print('hello world')\n" * 20)
    sample = np.asarray(doc[:64], dtype=np.int64)
    grown = fim_sample(sample, tokenizer, np.random.default_rng(0), fim_rate=1.0, spm_rate=0.0)
    assert len(grown) == 64 and grown[0] == tokenizer.fim_prefix_id
    assert tokenizer.fim_pad_id not in grown


def test_a_segment_that_shrinks_is_padded(tokenizer):
    """A segment spelled with one token per byte (as a sample cut inside a character, or a tokenizer that did
    not merge, can be) is re-encoded by FIM into fewer tokens: the sample keeps its length with <fim-pad>."""
    text = "def add(a, b):\n    return a + b\n"
    one_token_per_byte = [tokenizer.encode_bytes(bytes([b]))[0] for b in text.encode()]
    sample = np.asarray(one_token_per_byte + [tokenizer.eod_id], dtype=np.int64)
    out = fim_sample(sample, tokenizer, np.random.default_rng(0), fim_rate=1.0, spm_rate=0.5)
    assert out.shape == sample.shape and out.dtype == sample.dtype
    n_pad = int((out == tokenizer.fim_pad_id).sum())
    assert n_pad > 0 and (out[-n_pad:] == tokenizer.fim_pad_id).all()  # padding only at the end
    body = out[:-n_pad].tolist()
    assert body[-1] == tokenizer.eod_id  # the document's <|endoftext|> survives
    restored = undo_fim_segment(body[:-1], tokenizer)
    assert tokenizer.decode_bytes(restored) == text.encode()


def test_broken_layouts_are_rejected(tokenizer):
    p, m, s = tokenizer.fim_prefix_id, tokenizer.fim_middle_id, tokenizer.fim_suffix_id
    for bad in ([p, 5, m, 6, s, 7], [p, 5, s, 6, m, 7, m], [5, p, s, m]):
        with pytest.raises(ValueError):
            undo_fim_segment(bad, tokenizer)


# --- golden: SantaCoder's published layouts, written out by hand -------------------------------------------------


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's published byte -> character table, the alphabet of every byte-level BPE (SantaCoder's included)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


@pytest.fixture(scope="module")
def byte_tokenizer():
    """A byte-level BPE without merges, so every token is one byte and its id is the byte's value; then the special
    tokens under SantaCoder's names, in SantaCoder's order (its ids are 49152..49156, after 49152 BPE tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from santacoder.text.tokenizer import CodeTokenizer, FIMTokens

    vocab = {char: byte for byte, char in gpt2_bytes_to_unicode().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>", "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"])
    return CodeTokenizer(tokenizer, FIMTokens())


EOD, PRE, MID, SUF, PAD = 256, 257, 258, 259, 260


def b(text: str) -> list[int]:
    return list(text.encode("utf-8"))


class Draws:
    """The generator's draws, scripted: per segment, in bigcode Megatron-LM's order, FIM or not (a uniform draw
    below fim_rate: Megatron's binomial(1, fim_rate)), the two character cut points (its randint(0, len + 1,
    size=2), sorted), then SPM or not (below spm_rate: its binomial(1, fim_spm_rate))."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        cuts = self.draws.pop(0)
        assert (low, size) == (0, 2) and all(0 <= c < high for c in cuts)
        return np.asarray(cuts)


FIM, NO_FIM, SPM, PSM = 0.0, 0.99, 0.0, 0.99


@pytest.mark.parametrize(
    "spm,expected",
    [
        # PSM: <fim-prefix> prefix <fim-suffix> suffix <fim-middle> middle, then the document's own <|endoftext|>;
        # three sentinels longer than the sample, whose last three tokens are cut
        (PSM, [PRE, *b("def f(a):"), SUF, *b(" + 1\n"), MID, *b("\n    return a"), EOD, *b("y ")]),
        # SPM (the FIM paper's variant 2, as bigcode implements it): <fim-prefix><fim-suffix> suffix <fim-middle>
        # prefix middle: no sentinel between prefix and middle
        (SPM, [PRE, SUF, *b(" + 1\n"), MID, *b("def f(a):"), *b("\n    return a"), EOD, *b("y ")]),
    ],
    ids=["psm", "spm"],
)
def test_a_packed_sample_is_laid_out_as_santacoder_was_trained(byte_tokenizer, spm, expected):
    names = byte_tokenizer.fim_tokens.as_list()
    assert [byte_tokenizer.tokenizer.token_to_id(t) for t in names] == [EOD, PRE, MID, SUF, PAD]
    document = "def f(a):\n    return a + 1\n"
    sample = np.asarray(b(document) + [EOD] + b("y = 2"), dtype=np.int64)  # a document, then the next one's start
    # the first segment is cut after "def f(a):" (9) and before " + 1" (22); the second is left as it is
    draws = Draws(FIM, (22, 9), spm, NO_FIM)
    out = fim_sample(sample, byte_tokenizer, draws, fim_rate=0.5, spm_rate=0.5)
    assert out.tolist() == expected
    assert draws.draws == []  # exactly Megatron's draws: 3 for a FIM segment, 1 for one left alone
