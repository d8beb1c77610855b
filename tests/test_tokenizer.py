import json

import pytest

from santacoder import ConfigError, FIMTokens, load_tokenizer, train_tokenizer

TEXT = 'def grüß(x):\n    return "😀 ✓ " + str(12345)  # <|endoftext|> stays text\n'


def test_special_tokens_and_digits(tokenizer):
    assert tokenizer.decode([tokenizer.eod_id]) == "<|endoftext|>"
    assert tokenizer.decode([tokenizer.fim_prefix_id, tokenizer.fim_pad_id]) == "<fim-prefix><fim-pad>"
    assert len(tokenizer.special_ids) == 5
    digits = tokenizer.encode("12345")
    assert len(digits) == 5  # digits are split one by one, as SantaCoder's tokenizer does


def test_text_that_looks_like_a_special_token_stays_text(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert not tokenizer.special_ids.intersection(ids)
    assert tokenizer.decode(ids) == TEXT


def test_byte_exact_round_trip_at_every_cut(tokenizer):
    data = TEXT.encode("utf-8")
    assert tokenizer.decode_bytes(tokenizer.encode(TEXT)) == data
    for cut in range(len(data) + 1):  # cuts inside multi-byte characters leave invalid UTF-8 at the edges
        for part in (data[:cut], data[cut:]):
            assert tokenizer.decode_bytes(tokenizer.encode_bytes(part)) == part


def test_save_and_load_detects_starcoder_names(tmp_path, corpus_texts):
    tok = train_tokenizer(corpus_texts[:50], vocab_size=300, fim_tokens=FIMTokens.starcoder())
    tok.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path)  # a directory holding tokenizer.json
    assert loaded.fim_tokens == FIMTokens.starcoder()
    assert loaded.encode(TEXT) == tok.encode(TEXT)
    with pytest.raises(ConfigError, match="has no special token '<fim-prefix>'"):
        load_tokenizer(tmp_path / "tokenizer.json", FIMTokens())


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not a readable tokenizers JSON file"):
        load_tokenizer(bad)


def test_non_byte_level_tokenizer_is_refused(tmp_path):
    from tokenizers import Tokenizer, models

    vocab = {t: i for i, t in enumerate(FIMTokens().as_list() + ["世界"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.add_special_tokens(FIMTokens().as_list())
    path = tmp_path / "wordlevel.json"
    path.write_text(json.dumps(json.loads(tok.to_str())))
    with pytest.raises(ConfigError, match="is not a byte-level BPE"):
        load_tokenizer(path)
