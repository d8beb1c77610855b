import functools
import gzip
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from santacoder import ConfigError
from santacoder.data.corpus import Corpus, Document, is_validation
from santacoder.data.datamodule import CodeDataModule, ignore_stop_signals
from santacoder.data.dataset import EpochSampler, PackedFIMDataset
from santacoder.data.token_store import SPLITS, build_token_stores
from santacoder.model.loss import IGNORE_INDEX

LANGUAGES = (".py", ".java", ".js")


def datamodule(corpus_dir, tmp_path, **overrides) -> CodeDataModule:
    args = dict(
        source=str(corpus_dir),
        vocab_size=512,
        seq_len=64,
        batch_size=8,
        val_fraction=0.1,
        cache_dir=str(tmp_path / "cache"),
        num_workers=0,
        seed=1234,
    )
    return run_overrides.datamodule(**{**args, **overrides})


def test_directory_corpus_filters_extensions_and_skips_bad_files(corpus_dir, caplog):
    corpus = Corpus(corpus_dir, LANGUAGES)
    names = [d.name for d in corpus]
    assert "Hello.java" in names and "add.js" in names and "json/decoder.py" in names
    assert "notes.md" not in names and "latin1.py" not in names
    assert corpus.skipped.not_utf8 == 1
    assert "skipped 1 documents" in caplog.text
    assert names == [d.name for d in Corpus(corpus_dir, LANGUAGES)]  # deterministic order
    assert [d.name for d in Corpus(corpus_dir, extensions=(".java",))] == ["Hello.java"]


def test_bad_rows_are_skipped_one_by_one_and_counted_by_reason(tmp_path, caplog):
    good = [json.dumps({"content": f"x = {i}\n"}).encode() for i in range(4)]
    lines = [
        good[0],
        b'{"content": "caf\xe9"}',  # an invalid UTF-8 byte in the row itself
        json.dumps({"content": "\ud800"}).encode(),  # valid JSON, a lone surrogate: not encodable
        b"[1, 2]",  # JSON, but not an object
        json.dumps({"content": 7}).encode(),  # content of the wrong type
        b'{"content": "unterminated',
        good[1],
    ]
    (tmp_path / "rows.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # a .jsonl.gz cut in the middle: the rows before the cut are kept
    whole = gzip.compress(b"\n".join(good * 2000) + b"\n")
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "blob.py").write_bytes(b"\x00\x01binary\x00")
    corpus = Corpus(tmp_path, LANGUAGES)
    with caplog.at_level("WARNING"):
        docs = list(corpus)
    from_rows = [d for d in docs if d.name.startswith("rows.jsonl")]
    assert [d.name for d in from_rows] == ["rows.jsonl:0", "rows.jsonl:6"]  # the good row after the bad ones too
    assert 0 < sum(d.name.startswith("cut.jsonl.gz") for d in docs) < 8000
    assert corpus.skipped.counts == {
        "not_utf8": 1, "surrogates": 1, "bad_json": 2, "no_content": 1, "truncated": 1, "binary": 1,
    }  # fmt: skip
    (line,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped 7 documents" in line and "rows.jsonl:2 (not UTF-8)" in line  # file:line, 1-based


def test_table_corpora(tmp_path):
    rows = [{"content": "print('a')\n", "lang": "python"}, {"content": "var b = 1;\n"}, {"no_content": 1}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    pq.write_table(pa.table({"content": ["class C {}\n", "int x;\n"]}), tmp_path / "c.parquet")
    corpus = Corpus(tmp_path, LANGUAGES)
    docs = list(corpus)
    assert [d.name for d in docs] == ["a.jsonl:0", "a.jsonl:1", "b.jsonl.gz:0", "c.parquet:0", "c.parquet:1"]
    assert docs[-1].text == "int x;\n"
    assert corpus.skipped.no_content == 1
    assert [d.text for d in Corpus(tmp_path / "c.parquet", LANGUAGES)] == ["class C {}\n", "int x;\n"]


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(fim_rate=1.5), "data.fim_rate=1.5 must be between 0 and 1"),
        (dict(fim_spm_rate=-0.1), "data.fim_spm_rate=-0.1 must be between 0 and 1"),
        (dict(seq_len=0), "data.seq_len=0 must be a positive integer"),
        (dict(source="/no/such/dir"), "data.source='/no/such/dir' does not exist"),
        (dict(tokenizer="/no/tokenizer.json"), "data.tokenizer='/no/tokenizer.json' does not exist"),
        (dict(fim_tokens="gpt"), "data.fim_tokens='gpt' must be one of"),
    ],
)
def test_bad_values_are_refused_at_construction(corpus_dir, tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        datamodule(corpus_dir, tmp_path, **overrides)


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no code here")
    with pytest.raises(ConfigError, match="the corpus is empty"):
        datamodule(tmp_path / "empty", tmp_path)


def test_batches_have_the_configured_shapes_and_pad_is_never_a_label(corpus_dir, tmp_path):
    dm = datamodule(corpus_dir, tmp_path, fim_rate=1.0)
    dm.prepare_data()
    dm.setup("fit")
    pad = dm.tokenizer.fim_pad_id
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for i, batch in enumerate(loader):
            assert batch["input_ids"].shape == (8, 64) and batch["labels"].shape == (8, 64)
            assert batch["input_ids"].dtype == torch.int64
            assert not (batch["labels"] == pad).any()
            # where the label is kept, it is the next input token (shifted by one)
            keep = batch["labels"][:, :-1] != IGNORE_INDEX
            assert torch.equal(batch["labels"][:, :-1][keep], batch["input_ids"][:, 1:][keep])
            if i == 20:
                break


def test_fim_pad_positions_carry_no_label(corpus_dir, tmp_path, monkeypatch):
    dm = datamodule(corpus_dir, tmp_path)
    dm.prepare_data()
    dm.setup()
    pad = dm.tokenizer.fim_pad_id

    def shrunk(sample, tokenizer, rng, fim_rate, spm_rate):  # a FIM result that needed 10 pads
        return np.concatenate([sample[:-10], np.full(10, pad, dtype=sample.dtype)])

    monkeypatch.setattr("santacoder.data.dataset.fim_sample", shrunk)
    item = dm.datasets["train"][0]
    assert (item["input_ids"][-9:] == pad).all()
    assert (item["labels"][-10:] == IGNORE_INDEX).all() and (item["labels"][:-10] != IGNORE_INDEX).all()


def test_token_store_is_cached_and_rebuilt_when_the_corpus_changes(corpus_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 20)
    dm = datamodule(src, tmp_path, seq_len=16)
    dm.prepare_data()
    stores = sorted((tmp_path / "cache").glob("tokens-*"))
    assert len(stores) == 1
    mtime = (stores[0] / "train" / "tokens.bin").stat().st_mtime_ns
    datamodule(src, tmp_path, seq_len=16).prepare_data()  # unchanged corpus: reused
    assert (stores[0] / "train" / "tokens.bin").stat().st_mtime_ns == mtime
    (src / "new.py").write_text("print('new file')\n")
    dm2 = datamodule(src, tmp_path, seq_len=16)
    dm2.prepare_data()
    dm2.setup()
    assert len(list((tmp_path / "cache").glob("tokens-*"))) == 2
    total = sum(dm2.datasets[s].store.num_docs for s in ("train", "val"))
    assert total == 31


def test_split_is_by_document_and_deterministic(corpus_dir, tmp_path):
    dm = datamodule(corpus_dir, tmp_path)
    dm.prepare_data()
    dm.setup()
    val_names = {d.name for d in Corpus(corpus_dir, LANGUAGES) if is_validation(d.name, 0.1)}
    assert dm.datasets["val"].store.num_docs == len(val_names) > 0
    n_docs = len(list(Corpus(corpus_dir, LANGUAGES)))
    assert dm.datasets["train"].store.num_docs == n_docs - len(val_names)


def test_samples_are_deterministic_in_any_worker(corpus_dir, tmp_path):
    dm = datamodule(corpus_dir, tmp_path, fim_rate=0.5)
    dm.prepare_data()
    dm.setup()
    ds = dm.datasets["train"]
    keys = [(1, i) for i in range(12)]
    direct = torch.stack([ds[k]["input_ids"] for k in keys])
    loaded = torch.cat([b["input_ids"] for b in DataLoader(ds, batch_size=4, sampler=keys, num_workers=2)])
    assert torch.equal(direct, loaded)
    assert not torch.equal(ds[(0, 3)]["input_ids"], ds[(1, 3)]["input_ids"]) or ds.fim_rate == 0


def test_ranks_see_disjoint_samples_and_epochs_reshuffle(corpus_dir, tmp_path):
    dm = datamodule(corpus_dir, tmp_path)
    dm.prepare_data()
    dm.setup()
    ds = dm.datasets["train"]
    shares = [list(EpochSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=1, drop_last=True)) for r in (0, 1)]
    idx = [{i for _, i in share} for share in shares]
    assert not idx[0] & idx[1] and len(idx[0]) == len(idx[1]) == len(ds) // 2
    sampler = EpochSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=1)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert all(e == 1 for e, _ in epoch1) and [i for _, i in epoch1] != [i for _, i in shares[0]]


def test_global_batch_is_divided_across_ranks(corpus_dir, tmp_path):
    dm = datamodule(corpus_dir, tmp_path, batch_size=12)
    assert dm.micro_batch_size(world_size=2, accumulate_grad_batches=3) == 2
    with pytest.raises(ConfigError, match="data.batch_size=12 .* must be divisible by .* = 8"):
        dm.micro_batch_size(world_size=4, accumulate_grad_batches=2)


def test_too_small_split_is_a_clear_error(tmp_path):
    src = tmp_path / "small"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    dm = datamodule(src, tmp_path, vocab_size=300, seq_len=64, batch_size=1, val_fraction=0.5)
    dm.prepare_data()
    with pytest.raises(ConfigError, match="too few for one sample of data.seq_len=64"):
        dm.setup()


def test_packed_dataset_reads_the_store_in_order(corpus_dir, tmp_path):
    dm = datamodule(corpus_dir, tmp_path, fim_rate=0.0)
    dm.prepare_data()
    dm.setup()
    ds: PackedFIMDataset = dm.datasets["train"]
    tokens = np.asarray(ds.store.tokens)
    item = ds[5]
    np.testing.assert_array_equal(item["input_ids"].numpy(), tokens[5 * 64 : 6 * 64])
    np.testing.assert_array_equal(item["labels"].numpy(), tokens[5 * 64 + 1 : 6 * 64 + 1])
    assert os.path.getsize(ds.store.directory / "tokens.bin") == 2 * ds.store.num_tokens  # uint16


def santacoder_style_tokenizer(texts: list[str], path) -> None:
    """A tokenizer.json laid out like bigcode/santacoder's: a byte-level BPE whose special tokens were added
    after training, at the end of the vocabulary, in the order EOD, prefix, middle, suffix, pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(["<|endoftext|>", "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"])
    tok.save(str(path))


@pytest.mark.parametrize("style", ["santacoder", "starcoder"])
def test_a_local_santacoder_or_starcoder_tokenizer_drives_the_pipeline(corpus_dir, corpus_texts, tmp_path, style):
    from santacoder.text.fim import fim_layout, undo_fim_segment

    path = tmp_path / "tokenizer.json"
    santacoder_style_tokenizer(corpus_texts, path)
    if style == "starcoder":  # same tokenizer with StarCoder's underscore names
        path.write_text(path.read_text().replace("<fim-", "<fim_"))
    dm = datamodule(corpus_dir, tmp_path, tokenizer=str(path), fim_tokens=style, fim_rate=1.0)
    dm.prepare_data()
    dm.setup()
    tok = dm.tokenizer
    assert tok.eod_id == 600 and tok.fim_pad_id == 604  # appended after the 600 BPE tokens, SantaCoder's order
    ds = dm.datasets["train"]
    # a sample whose first segment ends early (at a document's <|endoftext|>), so FIM growth cannot truncate it
    index = next(i for i in range(len(ds)) if tok.eod_id in ds.raw_sample(i)[5:32].tolist())
    raw = ds.raw_sample(index).tolist()
    sample = ds[(0, index)]["input_ids"].tolist() + [ds[(0, index)]["labels"][-1].item()]
    first = sample[: sample.index(tok.eod_id)]
    assert fim_layout(first, tok) in ("PSM", "SPM")
    assert tok.decode_bytes(undo_fim_segment(first, tok)) == tok.decode_bytes(raw[: raw.index(tok.eod_id)])


def test_custom_fim_token_names(corpus_dir, tmp_path):
    names = {"prefix": "<PRE>", "middle": "<MID>", "suffix": "<SUF>", "pad": "<PAD>"}
    dm = datamodule(corpus_dir, tmp_path, fim_tokens=names, fim_rate=1.0)
    dm.prepare_data()
    dm.setup()
    assert dm.tokenizer.decode([dm.tokenizer.fim_prefix_id, dm.tokenizer.fim_pad_id]) == "<PRE><PAD>"
    assert dm.datasets["train"][0]["input_ids"][0] == dm.tokenizer.fim_prefix_id
    with pytest.raises(ConfigError, match=r"data.fim_tokens has unknown keys \['begin'\]"):
        datamodule(corpus_dir, tmp_path, fim_tokens={"begin": "<B>"})


def test_validation_shares_cover_every_sample_once_on_any_number_of_ranks():
    dataset = list(range(11))  # not divisible by 2 or 3: DistributedSampler would repeat samples to even out
    for world in (1, 2, 3):
        shares = [
            [i for _, i in EpochSampler(dataset, num_replicas=world, rank=r, shuffle=False, drop_last=False, pad=False)]
            for r in range(world)
        ]
        assert sorted(sum(shares, [])) == dataset


def zero_fill(store_dir) -> None:
    """What a power loss can leave of a file whose size reached the disk but whose data did not."""
    path = store_dir / "train" / "tokens.bin"
    path.write_bytes(bytes(path.stat().st_size))


@pytest.mark.parametrize(
    "damage,reason",
    [
        (
            lambda d: (d / "train" / "tokens.bin").write_bytes((d / "train" / "tokens.bin").read_bytes()[:-100]),
            "tokens.bin holds",
        ),
        (lambda d: (d / "train" / "tokens.bin").write_bytes(b""), "tokens.bin holds 0 bytes"),
        (lambda d: (d / "val" / "meta.json").write_text('{"split": "val", "tok'), "metadata is unreadable"),
        (lambda d: shutil.rmtree(d / "val"), "meta.json is missing"),
        (lambda d: (d / "train" / "doc_offsets.npy").unlink(), "doc_offsets.npy is missing"),
        (zero_fill, "tokens.bin is damaged"),
    ],
    ids=["truncated-tokens", "empty-tokens", "truncated-meta", "split-deleted", "offsets-deleted", "zeroed-tokens"],
)
def test_a_damaged_token_store_is_rebuilt_with_one_line(corpus_dir, tmp_path, caplog, damage, reason):
    dm = datamodule(corpus_dir, tmp_path)
    dm.prepare_data()
    dm.setup()
    expected = {s: (d.store.num_tokens, d.store.num_docs) for s, d in dm.datasets.items()}
    store_dir = next((tmp_path / "cache").glob("tokens-*"))
    damage(store_dir)
    again = datamodule(corpus_dir, tmp_path)
    with caplog.at_level("WARNING"):
        again.prepare_data()
    (line,) = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert reason in line and str(store_dir) in line
    again.setup()
    assert {s: (d.store.num_tokens, d.store.num_docs) for s, d in again.datasets.items()} == expected
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == [store_dir.name]  # no litter


def test_a_token_store_damaged_after_preparation_is_refused_by_setup(corpus_dir, tmp_path):
    """Every rank's setup checks sizes and offsets; the content (a zero-filled file of the right size) is read
    against its checksums once per job, by prepare_data on global rank 0 (the test above)."""
    dm = datamodule(corpus_dir, tmp_path)
    dm.prepare_data()
    (next((tmp_path / "cache").glob("tokens-*")) / "train" / "tokens.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="incomplete or damaged \\(tokens.bin holds 0 bytes"):
        dm.setup()


def test_a_token_store_without_checksums_is_still_used(corpus_dir, tmp_path, caplog):
    dm = datamodule(corpus_dir, tmp_path)
    dm.prepare_data()
    store_dir = next((tmp_path / "cache").glob("tokens-*"))
    for split in SPLITS:  # as written before checksums were recorded
        meta = json.loads((store_dir / split / "meta.json").read_text())
        assert meta.pop("checksums").keys() == {"tokens.bin", "doc_offsets.npy"}
        (store_dir / split / "meta.json").write_text(json.dumps(meta))
    mtime = (store_dir / "train" / "tokens.bin").stat().st_mtime_ns
    again = datamodule(corpus_dir, tmp_path)
    with caplog.at_level("WARNING"):
        again.prepare_data()
    again.setup()
    assert "rebuilding" not in caplog.text
    assert (store_dir / "train" / "tokens.bin").stat().st_mtime_ns == mtime


def test_a_token_store_is_fsynced_before_and_after_its_rename(tmp_path, tokenizer, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(src, dst):
        events.append(("replace", str(src)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    docs = [Document(f"m{i}.py", f"def f{i}(x):\n    return x * {i}\n") for i in range(20)]
    build_token_stores(docs, tokenizer, tmp_path / "store", val_fraction=0.2)
    (rename,) = [i for i, event in enumerate(events) if event[0] == "replace"]
    tmp = Path(events[rename][1]).resolve()
    files = {tmp / split / name for split in SPLITS for name in ("tokens.bin", "doc_offsets.npy", "meta.json")}
    assert {str(p) for p in files | {tmp / s for s in SPLITS} | {tmp}} <= {path for _, path in events[:rename]}
    assert ("fsync", str(tmp_path.resolve())) in events[rename + 1 :]  # the rename itself


# -- data-loader workers and stop signals ---------------------------------------------------------------------

GRACE_S = 2.0


class SlowDataset(torch.utils.data.Dataset):
    """Item i is i, after ``delay`` seconds; item ``stuck`` never comes."""

    def __init__(self, n: int, delay: float = 0.0, stuck: int | None = None):
        self.n, self.delay, self.stuck = n, delay, stuck

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        while i == self.stuck:
            time.sleep(0.1)
        time.sleep(self.delay)
        return i


def one_worker(dataset, grace_s: float = GRACE_S):
    loader = DataLoader(
        dataset, batch_size=None, num_workers=1, worker_init_fn=functools.partial(ignore_stop_signals, grace_s=grace_s)
    )
    return iter(loader)


def stop(batches) -> None:
    for worker in batches._workers:  # one that outlived a failed test: SIGKILL, as it may ignore SIGTERM
        if worker.is_alive():
            worker.kill()
    batches._shutdown_workers()


def test_a_stuck_worker_ignores_sigint_and_sigusr1_and_exits_a_grace_period_after_sigterm():
    batches = one_worker(SlowDataset(3, stuck=1))
    try:
        assert next(batches) == 0  # the worker is initialised and now stuck on item 1
        worker = batches._workers[0]
        for sig in (signal.SIGINT, signal.SIGUSR1):
            os.kill(worker.pid, sig)
        time.sleep(0.3)
        assert worker.is_alive()
        start = time.monotonic()
        os.kill(worker.pid, signal.SIGTERM)
        worker.join(timeout=GRACE_S + 5)
        # status 0: torch's SIGCHLD handler in this process would raise on a worker killed by a signal
        assert worker.exitcode == 0 and GRACE_S - 0.5 < time.monotonic() - start < GRACE_S + 5
    finally:
        stop(batches)


def test_a_second_sigterm_stops_a_worker_at_once():
    batches = one_worker(SlowDataset(3, stuck=1), grace_s=60)
    try:
        assert next(batches) == 0
        worker = batches._workers[0]
        os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.5)  # two signals sent at once would arrive as one
        os.kill(worker.pid, signal.SIGTERM)
        worker.join(timeout=5)
        assert worker.exitcode == 0
    finally:
        stop(batches)


def test_a_worker_keeps_serving_batches_during_the_grace_period():
    """A job-wide SIGTERM reaches the workers too: the batch the main process is finishing must still come."""
    batches = one_worker(SlowDataset(100, delay=0.05))
    try:
        assert next(batches) == 0
        worker = batches._workers[0]
        start = time.monotonic()
        os.kill(worker.pid, signal.SIGTERM)
        assert [next(batches) for _ in range(10)] == list(range(1, 11))
        assert worker.is_alive() and time.monotonic() - start < GRACE_S
        worker.join(timeout=GRACE_S + 5)
        assert worker.exitcode == 0
    finally:
        stop(batches)


def test_the_data_cache_is_readable_by_other_users(corpus_dir):
    """The tokenizer and token stores a run caches in data/cache serve every run (and user) on the same corpus:
    they take the umask's modes, not the 0600/0700 of the temporary files they were written as. Tried as another
    uid when run as root."""
    import tempfile

    from helpers_access import unreadable_by_another_user

    shared = Path(tempfile.mkdtemp())  # pytest's own directories are private to their user: a shared place
    try:
        shared.chmod(0o755)
        datamodule(corpus_dir, shared).prepare_data()
        cached = sorted(p.name for p in (shared / "cache").iterdir())
        assert any(n.startswith("tokenizer") for n in cached) and any(n.startswith("tokens-") for n in cached)
        assert unreadable_by_another_user(shared / "cache") == []
    finally:
        shutil.rmtree(shared)
