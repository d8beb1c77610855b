"""Bad input a new user meets (oversized files, unusable corpora, litter of killed preparations, full disks,
checkpoints that cannot continue this run, bad optimizer values): each ends in one line that says what is wrong
and what to do, and no good data or earlier output is lost."""

import gzip
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import open_dict

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from helpers_disk import FailingWriter
from santacoder import ConfigError, load
from santacoder.checkpoints import storage
from santacoder.checkpoints.layouts.project import save_checkpoint
from santacoder.checkpoints.storage import read_checkpoint
from santacoder.data import cache_files, token_store
from santacoder.data.corpus import Corpus, default_source
from santacoder.errors import OutOfSpaceError
from santacoder.training.task import main, train

TESTS = Path(__file__).resolve().parent
CODE = (default_source() / "textwrap.py").read_text()  # real Python, ~20 KB


def datamodule(source, tmp_path, **values):
    args = dict(
        source=str(source),
        vocab_size=300,
        seq_len=16,
        batch_size=2,
        val_fraction=0.2,
        cache_dir=str(tmp_path / "cache"),
        num_workers=0,
        seed=1,
    )
    return run_overrides.datamodule(**{**args, **values})


def code_of_size(n: int, salt: int = 0) -> str:
    text = f"# file {salt}\n" + CODE * (n // len(CODE) + 1)
    return text[:n]


# -- documents above data.max_doc_bytes -------------------------------------------------------------------


def test_documents_above_max_doc_bytes_are_skipped_and_counted_and_the_rest_kept(tmp_path):
    (tmp_path / "small.py").write_text("x = 1\n")
    (tmp_path / "big.py").write_text("y = 2\n" * 200)  # 1200 bytes
    rows = [{"content": "a = 1\n"}, {"content": "é" * 600}, {"content": "\n" * 900}, {"content": "b = 2\n"}]
    # row 2: 600 characters but 1200 bytes of UTF-8; row 3: 900 bytes, held in 1802 bytes of JSON escapes
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.table({"content": ["c = 3\n", "z" * 5000]}), tmp_path / "t.parquet")
    corpus = Corpus(tmp_path, (".py",), max_doc_bytes=1000)
    docs = {d.name: d.text for d in corpus}
    assert docs == {"rows.jsonl:0": "a = 1\n", "rows.jsonl:2": "\n" * 900, "rows.jsonl:3": "b = 2\n",
                    "small.py": "x = 1\n", "t.parquet:0": "c = 3\n"}  # fmt: skip
    assert corpus.skipped.counts == {"too_large": 3}
    assert sorted(corpus.skipped.examples) == ["big.py (larger than data.max_doc_bytes)",
                                               "rows.jsonl:2 (larger than data.max_doc_bytes)",
                                               "t.parquet:1 (larger than data.max_doc_bytes)"]  # fmt: skip


def test_a_jsonl_line_too_long_for_any_document_is_read_past_in_pieces(tmp_path):
    # max_doc_bytes=10: lines over 6 x 10 + 64 KiB are skipped without parsing or holding them
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"content": "k" * 300_000}) + "\n" + json.dumps({"content": "ok"}) + "\n")
    corpus = Corpus(path, (".py",), max_doc_bytes=10)
    assert [(d.name, d.text) for d in corpus] == [("rows.jsonl.gz:1", "ok")]  # named by row, as always
    assert corpus.skipped.counts == {"too_large": 1} and corpus.skipped.examples[0].startswith("rows.jsonl.gz:1 ")


def test_max_doc_bytes_must_be_a_positive_integer(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"data.max_doc_bytes=0 must be a positive integer"):
        datamodule(tmp_path, tmp_path, max_doc_bytes=0)


CHILD = """
import json, resource, sys
import run_overrides
from santacoder.data.token_store import TokenStore

source, cache, tokenizer = sys.argv[1:4]
dm = run_overrides.datamodule(source=source, tokenizer=tokenizer, seq_len=64, batch_size=8, val_fraction=0.1,
                              cache_dir=cache, num_workers=0, seed=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dm.prepare_data()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
store = dm._store_dir(dm._load_tokenizer())
docs = sum(TokenStore(store / s).num_docs for s in ("train", "val"))
print(json.dumps({"before_mb": before / 1024, "growth_mb": (after - before) / 1024, "docs": docs,
                  "skipped": dm.corpus.skipped.counts}))
"""
# Bound on what preparing this corpus may add to the process's peak RSS, with 2 tokenizer threads: tokenizers
# holds ~120 bytes per byte of each document it is encoding and ~50 per byte of the batch's output, and a batch
# is the 4 MiB budget plus at most one document (measured: ~400 MB). Without the budget, the 24 MB of ordinary
# files were one 512-document batch (measured: 1.2 GB), and the 200 MB file or row took all memory.
GROWTH_BOUND_MB = 700


@pytest.mark.integration
def test_a_200_mb_file_and_row_are_skipped_and_tokenizing_stays_within_a_memory_bound(tmp_path, tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(24):  # 24 MB of ordinary code, each file just under the 1 MB limit
        (corpus / f"mod{i:02d}.py").write_text(code_of_size(990_000, salt=i))
    chunk = code_of_size(1 << 20)
    with open(corpus / "generated.py", "w") as f:  # 200 MB, e.g. a generated table
        for _ in range(200):
            f.write(chunk)
    with open(corpus / "rows.jsonl", "w") as f:
        f.write(json.dumps({"content": "before = 1\n"}) + "\n")
        f.write('{"content": "')
        for _ in range(200):
            f.write(json.dumps(chunk)[1:-1])
        f.write('"}\n' + json.dumps({"content": "after = 2\n"}) + "\n")
    tokenizer.save(tmp_path / "tokenizer.json")

    def limit_memory():  # the old code's 200 MB document would take the machine: fail here instead
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(corpus), str(tmp_path / "cache"), str(tmp_path / "tokenizer.json")],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "RAYON_NUM_THREADS": "2",  # the bound holds for 2 threads, whatever this machine's core count
            "RAYON_RS_NUM_THREADS": "2",
        },
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit_memory,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"peak RSS growth while preparing: {measured['growth_mb']:.0f} MB (bound {GROWTH_BOUND_MB} MB)")
    assert measured["skipped"] == {"too_large": 2}
    assert measured["docs"] == 24 + 2  # every ordinary file and both small rows
    assert measured["growth_mb"] < GROWTH_BOUND_MB


# -- corpora with no usable document ------------------------------------------------------------------------


def write_no_content(path: Path) -> Path:
    path = path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"x = {i}\n"}) + "\n" for i in range(5)))
    return path


def write_corrupt_parquet(path: Path) -> Path:
    pq.write_table(pa.table({"content": ["x = 1\n"] * 100}), path / "t.parquet")
    data = (path / "t.parquet").read_bytes()
    (path / "t.parquet").write_bytes(data[:20] + os.urandom(len(data) - 40) + data[-20:])
    return path / "t.parquet"


def write_plain_gz(path: Path) -> Path:
    path = path / "rows.jsonl.gz"  # not gzip at all
    path.write_text(json.dumps({"content": "x = 1\n"}) + "\n")
    return path


def write_too_large(path: Path) -> Path:
    (path / "huge.py").write_text("x = 1\n" * 300_000)
    return path


@pytest.mark.parametrize(
    "write,match",
    [
        (write_no_content, r"all were skipped \(5 no string 'content'.*'content' column \(The Stack's layout\)"),
        (write_corrupt_parquet, r"all were skipped \(1 unreadable.*each \.parquet is whole"),
        (write_plain_gz, r"all were skipped \(1 unreadable.*each \.jsonl\.gz is gzip"),
        (write_too_large, r"all were skipped \(1 larger than data.max_doc_bytes.*raise data.max_doc_bytes"),
    ],
)
def test_a_corpus_with_no_usable_document_says_why_not_that_it_is_small(tmp_path, write, match):
    source = tmp_path / "corpus"
    source.mkdir()
    source = write(source)
    dm = datamodule(source, tmp_path)
    with pytest.raises(ConfigError, match=rf"data.source='{source}' has no usable document: {match}"):
        dm.prepare_data()


def test_an_unreadable_source_directory_is_reported_as_unreadable_not_empty(tmp_path, monkeypatch, caplog):
    corpus = tmp_path / "corpus"
    (corpus / "locked").mkdir(parents=True)
    (corpus / "locked" / "a.py").write_text("x = 1\n")
    (corpus / "open").mkdir()
    (corpus / "open" / "b.py").write_text("y = 2\n")
    locked = set()
    scandir = os.scandir

    def as_permissions_say(path):  # root reads anything: deny what chmod denies to other users
        if Path(path) in locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", as_permissions_say)
    for directory in (corpus / "locked", corpus):
        directory.chmod(0)
        locked.add(directory)
    try:
        with pytest.raises(
            ConfigError, match=rf"data.source='{corpus}' cannot be read: {corpus} \(Permission denied\)"
        ):
            Corpus(corpus, (".py",))
        corpus.chmod(0o755)
        locked.discard(corpus)
        assert [d.name for d in Corpus(corpus, (".py",))] == ["open/b.py"]  # the rest is kept
        assert "could not list 1 directories" in caplog.text and "locked (Permission denied)" in caplog.text
    finally:
        corpus.chmod(0o755)
        (corpus / "locked").chmod(0o755)


# -- litter of interrupted preparation ------------------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_only_temporaries_of_dead_or_long_silent_preparations_are_removed(tmp_path):
    host = socket.gethostname()
    cache = tmp_path / "cache"
    cache.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        names = {
            "dead": f"tokens-a-b-val0.1.tmp-{host}-{dead_pid()}-x1y2",
            "dead_file": f"tokenizer-a.json.tmp-{host}-{dead_pid()}-q9",
            "running": f"tokens-a-b-val0.1.tmp-{host}-{sleeper.pid}-z3",
            "other_host_new": "tokens-a-b-val0.1.tmp-node17-4242-w4",
            "other_host_old": "tokens-a-b-val0.1.tmp-node18-4242-v5",
        }
        for key, name in names.items():
            if key == "dead_file":
                (cache / name).write_text("")
            else:
                (cache / name / "train").mkdir(parents=True)
                (cache / name / "train" / "tokens.bin").write_bytes(b"\0" * 64)
        old = time.time() - cache_files.STALE_AFTER_S - 60
        for p in [cache / names["other_host_old"], *(cache / names["other_host_old"]).rglob("*")]:
            os.utime(p, (old, old))
        removed = cache_files.remove_stale_temporaries(cache)
        assert sorted(p.name for p in removed) == sorted(names[k] for k in ("dead", "dead_file", "other_host_old"))
        assert sorted(p.name for p in cache.iterdir()) == sorted(names[k] for k in ("running", "other_host_new"))
    finally:
        sleeper.kill()
        sleeper.wait()


PREPARE = """
import sys
import run_overrides
run_overrides.datamodule(source=sys.argv[1], cache_dir=sys.argv[2], vocab_size=300, seq_len=16, batch_size=2,
                         val_fraction=0.2, num_workers=0, seed=1).prepare_data()
"""


@pytest.mark.integration
def test_a_preparation_killed_while_tokenizing_leaves_litter_that_the_next_start_removes(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"m{i}.py").write_text(code_of_size(400_000, salt=i))
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", PREPARE, str(corpus), str(cache)], env=env)
    deadline = time.time() + 300
    while not list(cache.glob("tokens-*.tmp-*/train/tokens.bin")) and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # as the OOM killer or a cluster's time limit does
    child.wait()
    litter = list(cache.glob("*.tmp-*"))
    assert litter, "the kill came too late to leave a temporary store"
    dm = datamodule(corpus, tmp_path, cache_dir=str(cache))
    dm.prepare_data()
    assert not list(cache.glob("*.tmp-*"))
    dm.setup()
    assert dm.datasets["train"].store.num_docs + dm.datasets["val"].store.num_docs == 40


# -- full disks ---------------------------------------------------------------------------------------------


def test_a_full_disk_while_tokenizing_leaves_no_temporary_store_and_says_so(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    for i in range(30):
        (tmp_path / "corpus" / f"m{i}.py").write_text(code_of_size(2000, salt=i))
    dm = datamodule(tmp_path / "corpus", tmp_path)
    writes = []
    add = token_store._SplitWriter.add

    def add_until_full(self, ids):
        writes.append(len(ids))
        if len(writes) == 10:
            raise OSError(28, "No space left on device")
        add(self, ids)

    monkeypatch.setattr(token_store._SplitWriter, "add", add_until_full)
    with pytest.raises(OutOfSpaceError) as info:
        dm.prepare_data()
    cache = tmp_path / "cache"
    assert info.value.strerror == (
        f"No space left on device while writing the token store in '{cache}'; free space there or set "
        "data.cache_dir to a larger disk"
    )
    assert [p.name for p in cache.iterdir()] == [dm._tokenizer_file().name]  # the tokenizer, and nothing else
    monkeypatch.setattr(token_store._SplitWriter, "add", add)
    dm.prepare_data()  # space freed: the next start builds the store
    dm.setup()


@pytest.fixture()
def tiny_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs), where mounting one is allowed (root in a container that permits it)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the simulated test covers it")
    try:
        yield mount
    finally:
        done = subprocess.run(["umount", str(mount)], capture_output=True)
        assert done.returncode == 0, f"umount {mount}: {done.stderr.decode().strip()}"


def test_a_really_full_disk_ends_the_run_in_one_line_and_leaves_no_partial_file(
    compose_train, corpus_dir, tiny_disk, capsys
):
    # the tokenizer (~30 KB) fits on the 64 KiB disk; the token store (~700 KB) does not
    cfg = compose_train(*small_run(corpus_dir), f"data.cache_dir={tiny_disk}")
    with pytest.raises(SystemExit) as info:
        main(cfg)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: No space left on device while writing the token store in '{tiny_disk}'; free space there or set "
        "data.cache_dir to a larger disk"
    ]
    left = [p.name for p in tiny_disk.iterdir()]
    assert len(left) == 1 and left[0].startswith("tokenizer-") and left[0].endswith(".json")
    assert json.loads((tiny_disk / left[0]).read_text())["model"]["type"] == "BPE"  # whole, not a 0-byte file


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_earlier_ones_and_says_so(
    compose_train, corpus_dir, monkeypatch, capsys
):
    saves = []

    def open_for_write(path: Path):
        saves.append(path.name)
        return FailingWriter(path, limit=10_000) if len(saves) == 2 else open(path, "wb")

    monkeypatch.setattr(storage, "open_for_write", open_for_write)
    cfg = compose_train(*small_run(corpus_dir), "trainer.max_steps=6", "callbacks.run_checkpoint.every_n_train_steps=3")
    with pytest.raises(SystemExit) as info:
        main(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    assert info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: No space left on device (injected) while writing checkpoint step_000006.ckpt in '{checkpoints}'; the "
        "checkpoints saved before it are kept; free space there (or move the run) and resume with ckpt_path=last"
    ]
    assert read_checkpoint(checkpoints / "last.ckpt", check_contents=True)["global_step"] == 3
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step_000003.ckpt"]


# -- checkpoints that cannot continue this run ------------------------------------------------------------------


def small_run(corpus_dir, *extra: str) -> list[str]:
    return [
        *run_overrides.data(corpus_dir, seq_len=32, batch_size=4),
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=32),
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
        *extra,
    ]


def test_ckpt_paths_that_cannot_continue_this_run_stop_it_in_one_line(compose_train, corpus_dir, tmp_path):
    first = compose_train(*small_run(corpus_dir))
    with open_dict(first):
        first.paths.output_dir = str(tmp_path / "first")
    train(first)
    good = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    good_bytes = good.read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.ckpt").write_bytes(b"")
    (bad / "notes.ckpt").write_text("not a checkpoint\n")
    (bad / "truncated.ckpt").write_bytes(good_bytes[: len(good_bytes) // 2])
    torch.save([1, 2, 3], bad / "list.ckpt")
    save_checkpoint(load(good), bad / "weights.ckpt")  # what `santacoder convert --to ckpt` writes
    cases = {
        "empty": "is not a checkpoint written by torch.save",
        "notes": "is not a checkpoint written by torch.save",
        "truncated": "is truncated or not a torch checkpoint",
        "list": "is not a Lightning checkpoint of this project",
        "weights": r"holds weights only \(no optimizer, schedule or step to resume from\); start a new run from "
        r"these weights with model.init_from=",
    }
    for name, match in cases.items():
        cfg = compose_train(*small_run(corpus_dir, "trainer.max_steps=4"), f"ckpt_path={bad / name}.ckpt")
        with pytest.raises(ConfigError, match=match):
            train(cfg)
        assert not (Path(cfg.paths.output_dir) / "checkpoints").exists(), name
    other_shape = compose_train(
        *small_run(corpus_dir, "trainer.max_steps=4", "model.config.n_layer=3"), f"ckpt_path={good}"
    )
    with pytest.raises(ConfigError, match=r"another shape than this run's \(n_layer=3\); resume with the model "
                                          r"settings of the run that wrote it \(model.config.n_layer=2\)"):  # fmt: skip
        train(other_shape)
    assert good.read_bytes() == good_bytes


def test_a_checkpoint_of_another_corpus_or_tokenizer_is_refused_unless_asked_for(compose_train, corpus_dir, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_dir, corpus)
    first = compose_train(*small_run(corpus))
    train(first)
    ckpt = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"

    other_tokenizer = compose_train(
        *small_run(corpus, "trainer.max_steps=4", "data.vocab_size=500"), f"ckpt_path={ckpt}"
    )
    with pytest.raises(ConfigError, match=r"was trained with another tokenizer \(\w+; this run's is \w+, so its ids "
                                          r"mean other text\)\. Resume with the data settings"):  # fmt: skip
        train(other_tokenizer)

    (corpus / "added.py").write_text(code_of_size(5000))  # the corpus changed since the checkpoint
    changed = small_run(corpus, "trainer.max_steps=4")
    with pytest.raises(ConfigError, match=r"was trained with another corpus .*files were added, removed, changed or "
                                          r"moved\).*set resume_with_other_data=true"):  # fmt: skip
        train(compose_train(*changed, f"ckpt_path={ckpt}"))
    anyway = compose_train(*changed, f"ckpt_path={ckpt}", "resume_with_other_data=true")
    with open_dict(anyway):
        anyway.paths.output_dir = str(tmp_path / "anyway")
    assert train(anyway)["step"] == 4
