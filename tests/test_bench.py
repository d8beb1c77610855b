"""`make bench` in seconds: every benchmark's smoke run, through the module that writes bench/results.md. Each table
must hold its agreement checks (same loss, same tokens, each backend close to the reference), and each ratio must be
the one its own measured numbers give; the speed itself is never asserted (shared machines)."""

import re
import shutil
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.integration


def run_benchmarks(out, *args: str) -> str:
    cmd = [sys.executable, "-m", "santacoder.bench", "--smoke", "--out", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out.read_text()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> str:
    return run_benchmarks(tmp_path_factory.mktemp("bench") / "results.md", "--no-compile")


def rows(results: str, heading: str) -> list[dict[str, str]]:
    """The table under ``## heading``, one dict per data row."""
    return table_rows(results.split(f"## {heading}", 1)[1].split("\n## ", 1)[0])


def table_rows(text: str) -> list[dict[str, str]]:
    """The markdown table in ``text``, one dict per data row."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    header, *data = ([cell.strip() for cell in line.strip("|").split("|")] for line in lines)
    return [dict(zip(header, row, strict=True)) for row in data]


def ratio(cell: str) -> float:
    assert re.fullmatch(r"\d+\.\d\dx", cell), cell
    return float(cell[:-1])


def number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def test_the_training_step_matches_transformers_loss_and_its_ratios_are_its_measurements(results):
    table = {row["variant"]: row for row in rows(results, "Training step")}
    assert set(table) == {"santacoder, chunked loss", "santacoder, full loss", "transformers GPTBigCode"}
    assert all(row["same loss"] == "yes" for row in table.values())  # the same loss from the same weights
    theirs = table["transformers GPTBigCode"]
    for row in table.values():
        # tokens/s is printed rounded to a token: the ratio agrees with it to the printed precision
        assert ratio(row["speed vs transformers"]) == pytest.approx(
            number(row["tokens/s"]) / number(theirs["tokens/s"]), abs=0.006
        )
    # memory is torch's own accounting, deterministic: the chunked loss allocates less than the full logits
    mem = {name: number(row["peak memory of a step"]) for name, row in table.items()}
    assert 0 < mem["santacoder, chunked loss"] < mem["santacoder, full loss"]
    saved = int(table["santacoder, chunked loss"]["memory saved vs transformers"].removesuffix("%"))
    assert saved == pytest.approx(100 * (1 - mem["santacoder, chunked loss"] / mem["transformers GPTBigCode"]), abs=1)
    assert "torch.compile" not in results  # --no-compile: the compiled row is the slow tier's


def test_the_fim_pipeline_is_measured_against_plain_packing(results):
    table = rows(results, "FIM data pipeline")
    assert [row["variant"] for row in table] == [
        "FIM rate 0.5, SPM 0.5 (SantaCoder)", "FIM rate 1.0", "no FIM (rate 0)"
    ]  # fmt: skip
    plain = number(table[-1]["tokens/s"])
    for row in table:
        assert number(row["tokens/s"]) == pytest.approx(256 * number(row["samples/s"]), rel=1e-3)  # seq 256
        assert ratio(row["speed vs no FIM"]) == pytest.approx(number(row["tokens/s"]) / plain, abs=0.006)


def test_attention_backends_agree_with_the_reference_and_are_compared_to_it(results):
    table = rows(results, "Attention forward")
    assert {row["backend"] for row in table} >= {"sdpa", "math"}
    assert all(float(row["error vs math"]) < 1e-4 for row in table)  # fp32: each backend agrees with math
    reference = {row["T"]: row for row in table if row["backend"] == "math"}
    for row in table:
        math = reference[row["T"]]
        # times are printed to 0.1 ms: the ratio agrees with them to that precision
        assert ratio(row["speed vs math"]) == pytest.approx(number(math["time"]) / number(row["time"]), rel=0.1)


def test_decoding_gives_the_tokens_of_transformers(results):
    table = rows(results, "Decoding")
    assert table and all(row["same tokens"] == "True" for row in table)
    for row in table:
        expected = number(row["santacoder tok/s"]) / number(row["transformers tok/s"])
        assert ratio(row["ratio"]) == pytest.approx(expected, abs=0.01)  # both sides rounded: 2 decimals, whole tok/s


def test_prepare_gives_the_in_run_tokens_and_is_measured_against_the_in_run_path(results):
    pytest.importorskip("datatrove", reason="prepare needs the data extra: pip install 'santacoder[data]'")
    table = {row["variant"]: row for row in rows(results, "Data preparation")}
    assert list(table) == [
        "in-run (build_token_stores)", "prepare, 2 tasks, 1 worker", "prepare, 2 tasks, 2 workers"
    ]  # fmt: skip
    assert all(row["same docs and tokens"] == "yes" for row in table.values())  # per split, as the in-run stores
    assert [row["processes"] for row in table.values()] == ["1", "1", "2"]
    reference = table["in-run (build_token_stores)"]
    for row in table.values():
        # the same tokens in every row: the speed ratio is that of the rates (printed to one token per second)
        assert number(row["MB/s per process"]) == pytest.approx(number(row["MB/s"]) / int(row["processes"]), abs=0.01)
        assert ratio(row["speed vs in-run"]) == pytest.approx(number(row["tokens/s"]) / number(reference["tokens/s"]),
                                                               abs=0.006)  # fmt: skip


def test_curation_times_each_stage_against_tokenizing_and_counts_what_the_curated_prepare_removed(results):
    section = results.split("## Curation", 1)[1].split("\n## ", 1)[0]
    stages, pipeline, removed = (table_rows(part) for part in section.split("\n\n") if part.startswith("| "))
    by_stage = {row["stage"]: row for row in stages}
    assert set(by_stage) >= {"tokenize (encode_batch, the reference)", "basic", "comments", "decontamination", "pii",
                             "exact_dedup (hash)", "near_dedup (MinHash signature)"}  # fmt: skip
    reference = number(by_stage["tokenize (encode_batch, the reference)"]["MB/s per worker"])
    for row in stages:  # the same megabytes in every row: time ratio = inverse rate ratio (rates printed to 0.01)
        assert ratio(row["time vs tokenizing"]) == pytest.approx(reference / number(row["MB/s per worker"]), rel=0.05,
                                                                 abs=0.01)  # fmt: skip
    runs = {row["prepare"]: row for row in pipeline}
    assert list(runs) == ["uncurated", "curated, 1 worker", "curated, 2 workers"]
    assert runs["curated, 1 worker"]["documents kept"] == runs["curated, 2 workers"]["documents kept"]
    assert number(runs["uncurated"]["documents kept"]) >= number(runs["curated, 2 workers"]["documents kept"])
    assert [row["stage"] for row in removed if row["language"] == "python"] == [
        "basic", "comments", "decontamination", "exact_dedup", "near_dedup", "pii"]  # fmt: skip


def test_the_attribution_index_reports_build_size_and_latency_against_its_references(results):
    section = results.split("## Attribution index", 1)[1].split("\n## ", 1)[0]
    if "skipped:" in section:
        pytest.skip("the attribution extra is not installed")
    build, size, queries = (table_rows(part) for part in section.split("\n\n") if part.startswith("| "))
    rates = {row["build"]: row for row in build}
    reference = number(rates["tokenize (the reference)"]["tokens/s"])
    for row in build:  # the same tokens in every row: the time ratio is the inverse of the rates' (rounded)
        assert ratio(row["time vs tokenizing"]) == pytest.approx(reference / number(row["tokens/s"]), rel=0.05,
                                                                 abs=0.01)  # fmt: skip
    assert [row["index size"].split(" (")[0] for row in size] == [
        "suffix array", "exact index, new files", "fuzzy index"]  # fmt: skip
    assert all(float(row["per token"]) > 0 for row in size)
    assert [row["query (400-token snippet)"].split(" (")[0] for row in queries][1:] == [
        "count its first 64 tokens", "exact spans",
        "exact spans, read as an index larger than memory", "attribute"]  # fmt: skip
    # the smoke index is small: read in memory, the way an index that fits is read
    assert "read in memory" in queries[2]["query (400-token snippet)"]
    found = re.search(r"(\d+) of (\d+) snippets cut from the indexed documents came back as copied", section)
    assert found and found[1] == found[2]  # every snippet of the index is found in it


def test_the_checkpoint_stall_is_measured_for_both_plugins_and_leaves_no_file(tmp_path):
    """Not part of `make bench` (a 1.1B save takes minutes): run on its own, the tiny preset."""
    cmd = [sys.executable, "-m", "santacoder.bench.checkpoint_stall", "--smoke", "--dir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = {row["mode"]: row for row in table_rows(done.stdout)}
    sync, async_ = table["synchronous (AtomicCheckpointIO)"], table["asynchronous (AsyncCheckpointIO)"]
    for row in (sync, async_):
        assert 0 < float(row["stall per save (s)"]) <= float(row["until on disk (s)"]) < float("inf")
    assert sync["stall per save (s)"] == sync["until on disk (s)"] and sync["stall vs sync"] == "1.00x"
    # the ratio is that of the stalls, which are printed to the millisecond: it lies within their rounding
    ours, theirs = float(async_["stall per save (s)"]), float(sync["stall per save (s)"])
    low, high = (ours - 5e-4) / (theirs + 5e-4), (ours + 5e-4) / (theirs - 5e-4)
    assert low - 0.005 <= ratio(async_["stall vs sync"]) <= high + 0.005
    # the clone copies every tensor, the tied embedding twice: more than the state, and the file with it
    assert float(async_["extra memory (GiB)"]) > float(async_["state (GiB)"]) and sync["extra memory (GiB)"] == "0"
    assert float(async_["file (GiB)"]) > float(sync["file (GiB)"])
    assert list(tmp_path.iterdir()) == []  # the files and their folder are removed


def test_the_checkpoint_stall_skips_what_does_not_fit_in_memory():
    """SantaCoder-1B in float32 on a 24 GiB machine: the state fits, the asynchronous clone beside it does not."""
    from santacoder.bench.checkpoint_stall import GiB, skip_reason, state_sizes
    from santacoder.config import GPTConfig

    state, clone = state_sizes(GPTConfig.from_name("santacoder-1b"), torch.float32)  # on the meta device
    assert state == 3 * 4 * 1_124_886_528  # weights and AdamW's two moments
    assert clone == state + 4 * 49280 * 2048  # plus the tied LM head's second name
    assert skip_reason(state, 22 * GiB, state, 100 * GiB) is None
    needs = skip_reason(state + clone, 22 * GiB, clone, 100 * GiB)  # 25.5 GiB, and 1 GiB to spare
    assert needs == "skipped: needs 26.5 GiB, 22.0 GiB available"
    assert "of disk" in skip_reason(state, 22 * GiB, state, 10 * GiB)


@pytest.mark.slow
def test_the_compiled_training_step_has_the_same_loss(tmp_path):
    """torch.compile'd blocks, a cold compile (minutes on a fresh machine): the slow tier."""
    results = run_benchmarks(tmp_path / "results.md", "--only", "train_step")
    table = {row["variant"]: row for row in rows(results, "Training step")}
    if not (shutil.which("g++") or shutil.which("c++")):  # torch.compile on CPU needs a C++ compiler
        assert "needs a C++ compiler" in results
        return
    assert table["santacoder, chunked loss, compiled"]["same loss"] == "yes"


@pytest.mark.integration
def test_training_memory_stays_flat_when_the_prepared_corpus_grows_tenfold():
    """Not part of `make bench` (minutes at full size): the smoke size, 0.5 MB against 5 MB of prepared tokens."""
    pytest.importorskip("datatrove", reason="prepare needs the data extra")
    cmd = [sys.executable, "-m", "santacoder.bench.prepared_memory", "--smoke"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["corpus"]: row for row in table_rows(done.stdout)}
    tokens = {name: int(row["tokens"].replace(",", "")) for name, row in rows.items()}
    assert 9 < tokens["10x"] / tokens["1x"] < 11
    assert float(rows["10x"]["vs 1x"]) < 1.10  # the bound: within 10%
