"""`prepare` on datatrove: a corpus of three languages -> one token shard per task, with per-document metadata and
a manifest; resumed after SIGKILL to byte-identical output; settings fixed per prepared directory; bad input
skipped and counted as training's own reader does."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from santacoder import ConfigError
from santacoder.data.corpus import Corpus, is_validation

pytest.importorskip("datatrove", reason="prepare needs the data extra: pip install 'santacoder[data]'")

from santacoder.data.prepare.pipeline import prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LANGS = {".py": "python", ".java": "java", ".js": "javascript"}


def three_language_corpus(root: Path, files_per_language: int = 12) -> Path:
    """Small programs in Python, Java and JavaScript, a JSONL in The Stack's layout, and two bad inputs."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files_per_language):
        (root / f"py/m{i:03d}.py").parent.mkdir(exist_ok=True)
        (root / f"py/m{i:03d}.py").write_text(f"def add_{i}(a, b):\n    # adds {i}\n    return a + b + {i}\n" * 3)
        (root / f"java/C{i:03d}.java").parent.mkdir(exist_ok=True)
        (root / f"java/C{i:03d}.java").write_text(
            f"public class C{i} {{\n  int twice(int x) {{ return {i} * x * 2; }}\n}}\n" * 2
        )
        (root / f"js/f{i:03d}.js").parent.mkdir(exist_ok=True)
        (root / f"js/f{i:03d}.js").write_text(f"function mul{i}(a, b) {{\n  return a * b * {i};\n}}\n" * 2)
    rows = [
        {"content": f"print({i})\n", "lang": "Python", "max_stars_repo_name": f"org/repo{i}",
         "max_stars_repo_path": f"src/p{i}.py", "max_stars_count": i, "max_stars_repo_licenses": ["MIT"]}
        for i in range(5)
    ]  # fmt: skip
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (root / "stack.jsonl").write_text("\n".join(lines) + "\n")
    (root / "py/latin1.py").write_bytes("# caf\xe9\n".encode("latin-1"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({
        "content": [f"const x{i} = {i};\n" for i in range(3)], "ext": ["js"] * 3,
        "max_stars_repo_name": [f"org/js{i}" for i in range(3)], "max_stars_repo_licenses": [["Apache-2.0"]] * 3,
    }), root / "stack.parquet")  # fmt: skip
    return root


def config(source, out: Path, tokenizer_file: Path, **values):
    cfg = OmegaConf.load(ROOT / "configs" / "prepare.yaml")
    del cfg["hydra"]
    # without curation: these tests compare prepared shards with the in-run path's documents (test_curation_pipeline
    # runs the curated pipeline)
    return OmegaConf.merge(cfg, {"source": str(source), "out": str(out), "tokenizer": str(tokenizer_file),
                                 "val_fraction": 0.2, "executor": {"workers": 1}, "curation": {"enabled": False}},
                           values)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return three_language_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def tokenizer_file(tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(path)
    return path


def read_docs(out: Path, split: str) -> list[dict]:
    docs = []
    for shard in sorted((out / "shards").iterdir()):
        docs += [json.loads(line) for line in (shard / split / "docs.jsonl").read_text().splitlines()]
    return docs


def test_prepare_writes_one_shard_per_task_with_every_document_and_its_metadata(corpus, tokenizer_file, tokenizer,
                                                                                 tmp_path):  # fmt: skip
    out = tmp_path / "prepared"
    manifest = prepare(config(corpus, out, tokenizer_file, tasks=3))
    in_run = list(Corpus(corpus, [".py", ".java", ".js"]))
    expected = {split: sorted(d.name for d in in_run if is_validation(d.name, 0.2) == (split == "val"))
                for split in ("train", "val")}  # fmt: skip
    for split in ("train", "val"):
        docs = read_docs(out, split)
        assert sorted(d["id"] for d in docs) == expected[split]  # the in-run split, by name, whatever the tasks
        assert manifest["splits"][split]["num_docs"] == len(docs)
        assert manifest["splits"][split]["shards"] == [f"shards/{r:05d}/{split}" for r in range(3)]
    # each shard starts with <|endoftext|>, and each document is [eod] + the ids training's tokenizer gives it
    texts = {d.name: d.text for d in in_run}
    for shard in sorted((out / "shards").iterdir()):
        meta = json.loads((shard / "train" / "meta.json").read_text())
        tokens = np.fromfile(shard / "train" / "tokens.bin", dtype=meta["dtype"])
        offsets = np.load(shard / "train" / "doc_offsets.npy")
        docs = [json.loads(line) for line in (shard / "train" / "docs.jsonl").read_text().splitlines()]
        assert tokens[0] == tokenizer.eod_id and len(offsets) == len(docs) + 1
        for k, doc in enumerate(docs):
            expected_ids = [tokenizer.eod_id] + tokenizer.encode(texts[doc["id"]])
            assert tokens[offsets[k] : offsets[k + 1]].tolist() == expected_ids
    # metadata: language by extension, The Stack's columns from the table
    by_id = {d["id"]: d for d in read_docs(out, "train") + read_docs(out, "val")}
    assert by_id["py/m000.py"]["language"] == "python" and by_id["java/C000.java"]["language"] == "java"
    stack = by_id["stack.jsonl:3"]
    assert (stack["repo"], stack["path"], stack["license"], stack["language"]) == ("org/repo3", "src/p3.py", "MIT",
                                                                                   "python")  # fmt: skip
    parquet = by_id["stack.parquet:1"]
    assert (parquet["repo"], parquet["license"], parquet["language"]) == ("org/js1", "Apache-2.0", "javascript")
    assert set(manifest["languages"]) == {"python", "java", "javascript"}
    assert manifest["skipped"] == {"bad_json": 1, "not_utf8": 1}  # counted, as training's reader counts them


def test_a_prepare_killed_mid_way_resumes_to_byte_identical_shards_and_manifest(corpus, tokenizer_file, tmp_path):
    reference = tmp_path / "uninterrupted"
    prepare(config(corpus, reference, tokenizer_file, tasks=4))
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "prepare.py"), f"source={corpus}", f"out={out}", f"tokenizer={tokenizer_file}",
           "val_fraction=0.2", "tasks=4", "executor.workers=1", "curation.enabled=false"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list((out / "logs" / "completions").glob("*")) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)  # the next task is under way: its shard is a temporary, if anything
    finally:
        proc.wait()
    done = len(list((out / "logs" / "completions").glob("*")))
    assert 1 <= done < 4 and not (out / "manifest.json").exists(), "the kill came after the end: nothing to resume"
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file() and "logs" not in p.parts)
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and "logs" not in p.parts)
    assert [f for f in files if (reference / f).read_bytes() != (out / f).read_bytes()] == []


def test_a_prepared_directory_refuses_other_settings_in_one_line(corpus, tokenizer_file, tmp_path):
    out = tmp_path / "prepared"
    prepare(config(corpus, out, tokenizer_file, tasks=2))
    with pytest.raises(ConfigError, match=r"^tasks=3 but .* was prepared with tasks=2 .*another out directory$"):
        prepare(config(corpus, out, tokenizer_file, tasks=3))
    assert prepare(config(corpus, out, tokenizer_file, tasks=2))["tasks"] == 2  # the same settings: done already


@pytest.mark.parametrize(
    "values,match",
    [
        ({"tasks": 0}, r"tasks=0 must be a positive integer"),
        ({"val_fraction": 1.5}, r"val_fraction=1.5 must be between 0 and 1"),
        ({"source": "/no/such/corpus"}, r"source='/no/such/corpus' does not exist"),
        ({"tokenizer": "/no/tokenizer.json"}, r"tokenizer='/no/tokenizer.json' is not a file"),
    ],
)
def test_bad_values_are_refused_before_any_work(corpus, tokenizer_file, tmp_path, values, match):
    with pytest.raises(ConfigError, match=match):
        prepare(OmegaConf.merge(config(corpus, tmp_path / "out", tokenizer_file), values))
    assert not (tmp_path / "out" / "shards").exists()


@pytest.mark.integration  # a whole curated prepare in a new process: ~40 s, most of the unit tier's time
def test_the_cli_prepares_the_same_as_prepare_py(corpus, tokenizer_file, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "santacoder.cli", "prepare", str(corpus), "--out", str(tmp_path / "p"),
         "--tokenizer", str(tokenizer_file), "--tasks", "2", "--set", "val_fraction=0.2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert f"train: {manifest['splits']['train']['num_docs']:,} documents" in result.stdout
    assert "python train.py data=prepared data.path=" in result.stdout


def test_train_tokenizer_reads_a_seeded_sample_not_the_whole_corpus(corpus, tmp_path, monkeypatch):
    """The sample stops once --sample-bytes of text are in (files read are counted); the same seed gives the same
    tokenizer, with SantaCoder's FIM tokens; a prepared directory stands for its sources."""
    from santacoder.cli import main as cli
    from santacoder.data.corpus import Corpus as CorpusClass

    read = []
    real = CorpusClass.read_file
    monkeypatch.setattr(CorpusClass, "read_file", lambda self, path: (read.append(path), real(self, path))[1])
    out = tmp_path / "a.json"
    assert (
        cli(["train-tokenizer", str(corpus), "--out", str(out), "--vocab-size", "300", "--sample-bytes", "2000"]) == 0
    )
    total = len(Corpus(corpus, [".py", ".java", ".js"]).files)
    assert 0 < len(read) < total / 2  # ~2 kB of a corpus of ~40 files of ~100-300 bytes each
    from santacoder.text.tokenizer import CodeTokenizer

    tok = CodeTokenizer.from_file(out)
    assert len(tok) == 300 and tok.fim_prefix_id is not None
    assert cli(["train-tokenizer", str(corpus), "--out", str(tmp_path / "b.json"), "--vocab-size", "300",
                "--sample-bytes", "2000"]) == 0  # fmt: skip
    assert out.read_bytes() == (tmp_path / "b.json").read_bytes()


def test_a_one_task_prepare_reads_as_the_in_run_token_store(corpus, tokenizer_file, tokenizer, tmp_path):
    """What data=prepared trains on (PreparedSplit) after a real prepare with one task is, token for token, the
    store the in-run path builds from the same corpus and tokenizer: the same samples for the same seed."""
    from santacoder.data.shards import PreparedSplit
    from santacoder.data.token_store import build_token_stores

    prepare(config(corpus, tmp_path / "prepared", tokenizer_file, tasks=1))
    in_run = build_token_stores(Corpus(corpus, [".py", ".java", ".js"]), tokenizer, tmp_path / "store", 0.2)
    for split in ("train", "val"):
        prepared = PreparedSplit(tmp_path / "prepared", split)
        assert prepared.num_tokens == in_run[split].num_tokens > 0
        assert np.array_equal(prepared.tokens[:], np.asarray(in_run[split].tokens))


def test_a_prepared_directory_is_readable_by_other_users(corpus, tokenizer_file, tmp_path):
    """Prepared data is shared (a data team prepares, training jobs of other accounts read): its shards must not
    keep the 0700 of the temporary directories they were written in. Tried as another uid when run as root."""
    from helpers_access import unreadable_by_another_user

    shared = Path(tempfile.mkdtemp())  # pytest's own directories are private to their user: a shared place
    try:
        shared.chmod(0o755)
        out = shared / "prepared"
        prepare(config(corpus, out, tokenizer_file, tasks=2))
        assert unreadable_by_another_user(out) == []
    finally:
        shutil.rmtree(shared)
