"""Prepared data (santacoder.data.shards, data=prepared): shards written by ShardWriter and a hand-written manifest
read back as the in-run token store's exact tokens, trained on with the in-run path's exact samples, sliced across
shards, refused in one line when damaged or unfinished, and read without loading the tokens."""

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from helpers_prepared import VAL_FRACTION, documents, write_prepared
from santacoder import ConfigError
from santacoder.conf import build
from santacoder.data import shards
from santacoder.data.corpus import Corpus, is_validation
from santacoder.data.dataset import PackedFIMDataset
from santacoder.data.shards import PreparedSplit, ShardWriter, read_manifest, shard_problem
from santacoder.data.token_store import SPLITS, build_token_stores
from santacoder.training.task import train

LANGUAGES = (".py", ".java", ".js")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpus_dir, tokenizer) -> Path:
    """The test corpus as one shard, its documents in Corpus order."""
    out = tmp_path_factory.mktemp("prepared")
    write_prepared(out, [list(Corpus(corpus_dir, LANGUAGES))], tokenizer)
    return out


def datamodule(compose_train, *overrides: str):
    return build(compose_train("data=prepared", *overrides), "data")


# -- the format -------------------------------------------------------------------------------------------------


def test_prepared_split_equals_the_in_run_token_store(prepared, corpus_dir, tokenizer, tmp_path):
    stores = build_token_stores(Corpus(corpus_dir, LANGUAGES), tokenizer, tmp_path / "store", VAL_FRACTION)
    for split in SPLITS:
        ours, in_run = PreparedSplit(prepared, split), stores[split]
        assert (ours.num_tokens, ours.num_docs) == (in_run.num_tokens, in_run.num_docs) and in_run.num_docs > 0
        tokens = ours.tokens[:]
        assert tokens.dtype == in_run.tokens.dtype == np.uint16
        assert np.array_equal(tokens, np.asarray(in_run.tokens)), split


def test_a_shard_starts_with_eod_and_lists_its_documents_in_order(prepared, corpus_dir, tokenizer):
    """What a suffix-array index and attribution read: documents parted by a leading <|endoftext|>, each found by its
    docs.jsonl line."""
    shard = prepared / "shards" / "00000" / "train"
    meta = json.loads((shard / "meta.json").read_text())
    tokens = np.fromfile(shard / "tokens.bin", dtype=meta["dtype"])
    offsets = np.load(shard / "doc_offsets.npy")
    docs = [json.loads(line) for line in (shard / "docs.jsonl").read_text().splitlines()]
    train = [d for d in Corpus(corpus_dir, LANGUAGES) if not is_validation(d.name, VAL_FRACTION)]
    assert tokens[0] == tokenizer.eod_id and tokens[-1] != tokenizer.eod_id
    assert [d["id"] for d in docs] == [d.name for d in train]
    assert [d["token_offset"] for d in docs] == offsets[:-1].tolist() and offsets[-1] == len(tokens)
    for line, doc in zip(docs, train, strict=True):
        start, n = line["token_offset"], line["num_tokens"]
        assert tokens[start] == tokenizer.eod_id
        assert tokenizer.decode_bytes(tokens[start + 1 : start + n].tolist()) == doc.text.encode()
        assert line["repo"] is None and line["license"] is None  # unknown metadata is null, not left out
    assert meta["languages"]["py"]["docs"] == sum(d.name.endswith(".py") for d in train)
    assert sum(c["tokens"] for c in meta["languages"].values()) == meta["num_tokens"] == len(tokens)
    assert shard_problem(shard, tokenizer) is None


def test_slices_spanning_shards_read_the_shards_in_manifest_order(tmp_path, tokenizer):
    """Three shards, the middle one empty: the virtual sequence is shard 0's documents, then shard 2's, each followed
    by <|endoftext|>; every slice across the boundaries equals that sequence's."""
    docs = documents(12)
    manifest = write_prepared(tmp_path / "p", [docs[:5], [], docs[5:]], tokenizer, val_fraction=0.0)
    eod = tokenizer.eod_id
    expected = np.array([t for d in docs for t in [*tokenizer.encode(d.text), eod]], dtype=np.uint16)
    split = PreparedSplit(tmp_path / "p", "train")
    assert (split.num_tokens, split.num_docs) == (len(expected), 12)
    assert np.array_equal(split.tokens[:], expected)
    boundary = sum(len(tokenizer.encode(d.text)) + 1 for d in docs[:5])
    for start in range(boundary - 4, boundary + 4):
        for length in (0, 1, 2, 9, 60):
            assert np.array_equal(split.tokens[start : start + length], expected[start : start + length])
    assert split.tokens[-1] == eod and split.tokens[boundary] == expected[boundary]
    assert np.array_equal(split.tokens[-3:], expected[-3:])
    samples = PackedFIMDataset(split, tokenizer, 16, fim_rate=0.0, fim_spm_rate=0.0, seed=0)
    assert all(np.array_equal(samples.raw_sample(i), expected[i * 16 : i * 16 + 17]) for i in range(len(samples)))
    assert PreparedSplit(tmp_path / "p", "val").tokens[:].size == 0  # every document went to train

    manifest["splits"]["train"]["shards"].reverse()  # the manifest decides the order
    reordered = [t for d in docs[5:] + docs[:5] for t in [*tokenizer.encode(d.text), eod]]
    assert np.array_equal(PreparedSplit(tmp_path / "p", "train", manifest).tokens[:], reordered)


def test_a_failed_writer_leaves_no_shard_and_a_rerun_replaces_the_older_one(tmp_path, tokenizer):
    """A task that fails leaves nothing, one that is killed leaves a hidden temporary that the next writer removes,
    and a task run again replaces its older shard."""
    docs = documents(4)
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, 3, tokenizer) as writer:
        writer.add("train", tokenizer.encode(docs[0].text), {"id": docs[0].name})
        raise RuntimeError("the task died")
    assert list((tmp_path / "shards").iterdir()) == []
    killed = (f"from santacoder.data.shards import ShardWriter; from santacoder import load_tokenizer; import os\n"
              f"w = ShardWriter({str(tmp_path)!r}, 0, load_tokenizer({str(tmp_path / 'tok.json')!r}))\n"
              "w.add('train', [1, 2, 3], {'id': 'x'}); os._exit(9)")  # fmt: skip
    tokenizer.save(tmp_path / "tok.json")
    assert subprocess.run([sys.executable, "-c", killed]).returncode == 9
    (litter,) = (tmp_path / "shards").iterdir()
    assert litter.name.startswith(".00000.") and litter.name.endswith(".partial")
    write_prepared(tmp_path, [docs[:2]], tokenizer, val_fraction=0.0)  # the task's rerun
    write_prepared(tmp_path, [docs[2:]], tokenizer, val_fraction=0.0)  # the task ran again, on other documents
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["00000"]  # no temporary left beside it
    lines = (tmp_path / "shards" / "00000" / "train" / "docs.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["m2.py", "m3.py"]


# -- refusals ---------------------------------------------------------------------------------------------------


def test_a_zero_filled_shard_is_refused_in_one_line_naming_it(prepared, tmp_path, compose_train):
    damaged = tmp_path / "damaged"
    shutil.copytree(prepared, damaged)
    tokens = damaged / "shards" / "00000" / "train" / "tokens.bin"
    tokens.write_bytes(bytes(tokens.stat().st_size))  # what a power loss can leave: the size, no content
    assert shard_problem(tokens.parent) == "tokens.bin is damaged: its content does not match the checksum in meta.json"
    dm = datamodule(compose_train, f"data.path={damaged}")
    with pytest.raises(ConfigError) as refused:
        dm.prepare_data()
    message = str(refused.value)
    assert f"shard '{tokens.parent}' is incomplete or damaged (tokens.bin is damaged" in message
    assert "\n" not in message

    tokens.write_bytes(bytes(10))  # truncated: even a rank that checks no content refuses it
    with pytest.raises(ConfigError, match=rf"shard '{tokens.parent}' is damaged \(tokens.bin holds 10 bytes"):
        PreparedSplit(damaged, "train")


def test_shards_are_read_whole_once_then_again_only_when_a_file_changes(prepared, tmp_path, compose_train,
                                                                        monkeypatch):  # fmt: skip
    """At The Stack's size, reading every shard at every start is hundreds of GB: verify_shards=once reads them
    whole the first time, and after that only when a shard's files change size or modification time."""
    from santacoder.data import prepared_datamodule

    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    reads = []
    real = prepared_datamodule.shard_problem

    def counted(directory, tokenizer, check_contents):
        reads.append(check_contents)
        return real(directory, tokenizer, check_contents)

    monkeypatch.setattr(prepared_datamodule, "shard_problem", counted)

    def start(*overrides: str) -> list[bool]:
        reads.clear()
        datamodule(compose_train, f"data.path={copy}", *overrides).prepare_data()
        return list(reads)

    assert all(start()) and len(reads) == 2  # the first start: both splits' shard read whole
    assert not any(start())  # unchanged since: the metadata only
    assert all(start("data.verify_shards=always"))
    tokens = copy / "shards" / "00000" / "train" / "tokens.bin"
    data = bytearray(tokens.read_bytes())
    data[100] ^= 1  # a changed byte, as a later write would leave it (a new modification time)
    tokens.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="tokens.bin is damaged"):
        start()  # read whole again, and refused


def test_a_missing_or_newer_manifest_is_refused_in_one_line(prepared, tmp_path, compose_train, tokenizer):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(prepared, unfinished)
    (unfinished / "manifest.json").unlink()  # the tasks ran, the manifest step did not
    expected = f"'{unfinished}' is not a prepared directory or its prepare has not finished"
    with pytest.raises(ConfigError, match=rf"^{expected} \(no manifest.json\): run prepare again \(it resumes\)$"):
        datamodule(compose_train, f"data.path={unfinished}")
    newer = {**read_manifest(prepared), "format": 2}
    (unfinished / "manifest.json").write_text(json.dumps(newer))
    with pytest.raises(ConfigError, match=r"is of format 2, newer than this santacoder reads \(1\): upgrade"):
        read_manifest(unfinished)


@pytest.mark.parametrize("setting", ["data.vocab_size=512", "data.tokenizer=TOKENIZER", "data.source=CORPUS"])
def test_what_prepare_decided_cannot_be_set_alongside(prepared, compose_train, corpus_dir, setting):
    setting = setting.replace("TOKENIZER", str(prepared / "tokenizer.json")).replace("CORPUS", str(corpus_dir))
    key = setting.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=.* cannot be set with data=prepared: data.path='{prepared}'"):
        datamodule(compose_train, f"data.path={prepared}", setting)
    with pytest.raises(ConfigError, match=r"^data.path is not set: give the directory that prepare wrote"):
        datamodule(compose_train)


# -- memory -----------------------------------------------------------------------------------------------------


def test_a_prepared_split_maps_a_shard_only_when_a_slice_reaches_it(tmp_path, tokenizer, monkeypatch):
    """Opening a split reads metadata only; each shard is memory-mapped when first read; what the split holds (and
    what a DataLoader worker receives) is a few numbers per shard, not the tokens."""
    docs = documents(200)
    write_prepared(tmp_path, [docs[:100], docs[100:]], tokenizer, val_fraction=0.0)
    mapped = []
    memmap = np.memmap

    def recording_memmap(path, *args, **kwargs):
        mapped.append(Path(path).parent.parent.name)
        return memmap(path, *args, **kwargs)

    monkeypatch.setattr(np, "memmap", recording_memmap)
    monkeypatch.setattr(shards, "MAX_OPEN_SHARDS", 1)
    split = PreparedSplit(tmp_path, "train")
    assert mapped == [] and split.num_docs == 200
    split.tokens[:10]
    split.tokens[:20]
    assert mapped == ["00000"]
    split.tokens[split.num_tokens - 10 :]
    assert mapped == ["00000", "00001"]
    split.tokens[:10]  # read again after the other shard: reopened, as at most one map is kept open
    assert mapped == ["00000", "00001", "00000"]

    tokens_bytes = 2 * split.num_tokens
    pickled = pickle.dumps(split)
    assert len(pickled) < 2048 < tokens_bytes
    assert np.array_equal(pickle.loads(pickled).tokens[:], split.tokens[:])


# -- training ---------------------------------------------------------------------------------------------------


def run_overrides_for(out_dir: Path, steps: int) -> list[str]:
    return [
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=32),
        "data.seq_len=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=2",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
        "+callbacks.record._target_=helpers_record.RecordBatches",
        f"+callbacks.record.out_dir={out_dir}",
    ]


def recorded_run(compose_train, out_dir: Path, steps: int, *data: str) -> dict:
    cfg = compose_train(*run_overrides_for(out_dir, steps), *data)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / "run")
    train(cfg)
    return json.loads((out_dir / "rank0.json").read_text())


@pytest.mark.integration
def test_training_on_prepared_data_sees_the_in_run_path_samples_and_resumes(
    prepared, corpus_dir, compose_train, tmp_path
):
    code = (f"data.source={corpus_dir}", f"data.tokenizer={prepared / 'tokenizer.json'}",
            f"data.val_fraction={VAL_FRACTION}")  # fmt: skip
    in_run = recorded_run(compose_train, tmp_path / "code", 4, *code)
    prepared_run = ("data=prepared", f"data.path={prepared}", "callbacks.run_checkpoint.every_n_train_steps=2")
    ours = recorded_run(compose_train, tmp_path / "prepared", 3, *prepared_run)
    assert len(in_run["samples"]) == 4 * 8
    assert ours["samples"] == in_run["samples"][:24]
    # the same model on the same batches (equal up to CPU float noise: reductions differ run to run)
    assert ours["losses"] == pytest.approx(in_run["losses"][:3], rel=1e-4)

    ckpt = tmp_path / "prepared" / "run" / "checkpoints" / "step_000002.ckpt"
    assert torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"]["path"] == str(prepared)
    resumed = recorded_run(compose_train, tmp_path / "resumed", 4, *prepared_run, f"ckpt_path={ckpt}")
    assert resumed["samples"] == in_run["samples"][16:]

    # a checkpoint's position means samples of its own data: resuming on the other data is refused, either way
    code_ckpt = tmp_path / "code" / "run" / "checkpoints" / "last.ckpt"
    for data, other_ckpt, setting in [
        (("data=prepared", f"data.path={prepared}"), code_ckpt, f"data.path='{prepared}'"),
        (code, ckpt, f"data.source='{corpus_dir}'"),
    ]:
        with pytest.raises(ConfigError, match=rf"was trained with another corpus .* this run's {setting} has"):
            recorded_run(compose_train, tmp_path / "refused", 5, *data, f"ckpt_path={other_ckpt}")
