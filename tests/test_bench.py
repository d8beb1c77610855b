"""`make bench` in seconds: every benchmark's smoke run, through the script that writes bench/results.md. Each
table must hold its ratios and its agreement checks; the speed itself is never asserted (shared machines)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("bench") / "results.md"
    cmd = [sys.executable, "-m", "santacoder.bench", "--smoke", "--no-compile", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out.read_text()


def rows(results: str, heading: str) -> list[list[str]]:
    """The data rows of the table under ``## heading``."""
    section = results.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def ratio(cell: str) -> float:
    assert re.fullmatch(r"\d+\.\d\dx", cell), cell
    return float(cell[:-1])


def test_the_training_step_matches_transformers_loss_and_measures_ratio_and_memory(results):
    table = rows(results, "Training step")
    variants = {row[1]: row for row in table}
    compiled = {"santacoder, chunked loss, compiled"} if shutil.which("g++") or shutil.which("c++") else set()
    if not compiled:  # torch.compile on CPU needs a C++ compiler; the table says why it is missing
        assert "needs a C++ compiler" in results
    assert set(variants) == {"santacoder, chunked loss", "santacoder, full loss", "transformers GPTBigCode"} | compiled
    assert all(row[-1] == "yes" for row in table)  # the same loss from the same weights
    assert ratio(variants["transformers GPTBigCode"][3]) == 1.0
    assert ratio(variants["santacoder, chunked loss"][3]) > 0
    # memory is measured by torch, and the chunked loss allocates less than full logits (deterministic)
    mem = {name: int(row[4].removesuffix(" MiB").replace(",", "")) for name, row in variants.items()}
    assert 0 < mem["santacoder, chunked loss"] < mem["santacoder, full loss"]


def test_the_fim_pipeline_is_measured_against_plain_packing(results):
    table = rows(results, "FIM data pipeline")
    assert [row[0] for row in table][-1] == "no FIM (rate 0)"
    assert all(ratio(row[3]) > 0 and int(row[1].replace(",", "")) > 0 for row in table)


def test_attention_backends_agree_with_the_reference_and_are_compared_to_it(results):
    table = rows(results, "Attention forward")
    assert {row[1] for row in table} >= {"sdpa", "math"}
    assert all(float(row[-1]) < 1e-4 for row in table)  # fp32: each backend agrees with math
    assert all(ratio(row[3]) > 0 for row in table)


def test_decoding_gives_the_tokens_of_transformers(results):
    table = rows(results, "Decoding")
    assert table and all(row[-1] == "True" for row in table)
    assert all(ratio(row[4]) > 0 for row in table)
