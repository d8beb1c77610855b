"""Curation's speed and effect: each stage alone in one process (MB/s per worker, against tokenizing the same text),
the whole curated ``prepare`` against the uncurated one, and what each stage removed or changed, per language.

    python -m santacoder.bench.curation             # the Python standard library, plus npm's JavaScript if installed
    python -m santacoder.bench.curation --smoke     # one package: the suite runs this

The corpus is what the machine has: the standard library's .py files (this project's embedded training corpus)
and, when npm is installed, its own .js files (``--js``, default /usr/lib/node_modules/npm). A BPE is trained on it
once (the fertility stage and the pipeline's tokenization need one). Stage rates are the median of ``--rounds``
passes over every document, each stage seeing the documents as they are (not only those earlier stages kept):
``decide`` per document, or for the dedup stages the work of their signature pass per document (a hash of the
content; the MinHash signature of its 5-grams). The pipeline rows run ``prepare`` (datatrove's local executor) into
a fresh directory, timed whole, after an untimed warm-up run (which starts datatrove's forkserver).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from santacoder.bench.common import machine, table
from santacoder.conf.compose import CONFIG_DIR
from santacoder.data.corpus import Corpus, default_source
from santacoder.text.tokenizer import CodeTokenizer, train_tokenizer

NPM = Path("/usr/lib/node_modules/npm")
TOKENIZE = "tokenize (encode_batch, the reference)"


def stage_functions(tokenizer: CodeTokenizer, sample: dict[str, list[str]]) -> dict:
    """name -> f(text, meta): each stage's per-document work."""
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig, create_hash_func

    from santacoder.data.curation.decontamination import Decontaminator, humaneval_strings
    from santacoder.data.curation.dedup import CodeWords, minhash_config
    from santacoder.data.curation.filters import BasicFilter, CommentsFilter, FertilityFilter, median_fertility
    from santacoder.data.curation.pii import PIIRedactor

    n = OmegaConf.load(CONFIG_DIR / "prepare.yaml").curation.near_dedup
    config = minhash_config(n.n_grams, n.bands, n.rows, n.seed)
    minhash = MinhashDedupSignature(tempfile.mkdtemp(), config, language=CodeWords())  # its folder stays empty
    exact_hash = create_hash_func(HashConfig(), str)
    stages = [BasicFilter(), CommentsFilter(), FertilityFilter(tokenizer, median_fertility(tokenizer, sample)),
              Decontaminator({"humaneval": humaneval_strings()}), PIIRedactor()]  # fmt: skip
    functions = {stage.name: stage.decide for stage in stages}
    functions["exact_dedup (hash)"] = lambda text, meta: exact_hash(text)

    def signature(text: str, meta: dict):
        shingles = minhash.get_shingles(text)
        return minhash.get_signature(shingles) if shingles.size else None  # as the stage: no 5-gram, no signature

    functions["near_dedup (MinHash signature)"] = signature
    return functions


def stage_rates(documents: list, functions: dict, tokenizer: CodeTokenizer, rounds: int) -> list[list]:
    total = sum(len(d.text.encode("utf-8")) for d in documents) / 1e6
    texts = [d.text for d in documents]
    timed = {TOKENIZE: lambda: tokenizer.encode_batch(texts)}
    for name, f in functions.items():
        timed[name] = lambda f=f: [f(d.text, d.meta) for d in documents]
    seconds = {name: [] for name in timed}
    for _ in range(rounds):  # alternating, so that a noisy moment hits every stage alike
        for name, run in timed.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    reference = statistics.median(seconds[TOKENIZE])
    rows = []
    for name, s in seconds.items():
        s = statistics.median(s)
        rows.append([name, f"{s:.2f}", f"{total / s:.2f}", f"{s / reference:.2f}x"])
    return rows


def prepared(sources: list[Path], tokenizer_file: Path, out: Path, curated: bool, workers: int) -> tuple[float, dict]:
    from santacoder.data.prepare.pipeline import prepare

    cfg = OmegaConf.load(CONFIG_DIR / "prepare.yaml")
    del cfg["hydra"]
    cfg = OmegaConf.merge(cfg, {
        "source": [str(s) for s in sources], "out": str(out), "tokenizer": str(tokenizer_file),
        "extensions": [".py", ".js"], "tasks": 2, "executor": {"workers": workers}, "curation": {"enabled": curated},
    })  # fmt: skip
    start = time.perf_counter()
    manifest = prepare(cfg)
    return time.perf_counter() - start, manifest


def removals(manifest: dict) -> list[list]:
    rows = []
    for report in manifest["curation"]:
        for language, c in report["languages"].items():
            done = c["removed_docs"] or c["changed_docs"]
            what = "changed" if c["changed_docs"] else "removed"
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(report["reasons"].items(), key=lambda kv: -kv[1]))
            rows.append([
                report["stage"], language, f"{c['seen_docs']:,}", f"{done:,} {what}",
                f"{100 * done / max(c['seen_docs'], 1):.1f}%",
                f"{(c['removed_bytes'] or c['changed_bytes']) / 1e6:.2f} of {c['seen_bytes'] / 1e6:.2f}",
                reasons if language == next(iter(report["languages"])) else "",
            ])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the json package only, one round, no JavaScript")
    parser.add_argument("--js", type=Path, default=NPM, help="a directory of JavaScript to add (if it exists)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args(argv)
    try:
        import multiprocess  # datatrove's pools
    except ImportError as e:
        print(f"skipped: curation needs the data extra ({e}); install it with: pip install 'santacoder[data]'")
        return 0
    # as in prepare_throughput: the forkserver has no file to import under `python -m`; preload what the tasks need
    multiprocess.set_forkserver_preload(["__main__", "santacoder.data.prepare.pipeline"])
    sources = [default_source() / "json"] if args.smoke else [default_source()]
    if not args.smoke and args.js.is_dir():
        sources.append(args.js)
    rounds, vocab_size = (1, 1024) if args.smoke else (args.rounds, args.vocab_size)
    documents = [doc for source in sources for doc in Corpus(source, [".py", ".js"])]
    by_language: dict[str, list[str]] = {}
    for doc in documents:
        by_language.setdefault(doc.meta["language"], []).append(doc.text)
    sizes = {lang: sum(len(t.encode("utf-8")) for t in texts) / 1e6 for lang, texts in by_language.items()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer = train_tokenizer((doc.text for doc in documents), vocab_size)
        tokenizer.save(root / "tokenizer.json")
        sample = {lang: texts[:1000] for lang, texts in by_language.items()}
        stage_rows = stage_rates(documents, stage_functions(tokenizer, sample), tokenizer, rounds)
        prepared(sources, root / "tokenizer.json", root / "warm-up", False, 2)  # starts the forkserver, untimed
        runs = {}
        for name, curated, workers in (("uncurated", False, 2), ("curated, 1 worker", True, 1),
                                       ("curated, 2 workers", True, 2)):  # fmt: skip
            runs[name] = prepared(sources, root / "tokenizer.json", root / name.replace(" ", "_"), curated, workers)
    total = sum(sizes.values())
    print(
        f"Curation: {machine()}; {', '.join(str(s) for s in sources)}: {len(documents):,} documents, "
        + ", ".join(f"{mb:.2f} MB of {lang}" for lang, mb in sorted(sizes.items()))
        + f"; BPE vocabulary {vocab_size}; median of {rounds} round(s)\n"
    )
    print("Each stage alone, one process, over every document:\n")
    print(table(["stage", "s", "MB/s per worker", "time vs tokenizing"], stage_rows))
    reference = runs["uncurated"][0]
    pipeline_rows = []
    for name, (seconds, manifest) in runs.items():
        docs = sum(split["num_docs"] for split in manifest["splits"].values())
        workers = 1 if "1 worker" in name else 2
        pipeline_rows.append([name, f"{seconds:.1f}", f"{total / seconds:.2f}", f"{total / seconds / workers:.2f}",
                              f"{seconds / reference:.2f}x", f"{docs:,}"])  # fmt: skip
    print("\nThe whole prepare (2 tasks; read, curate, tokenize, write shards and manifest):\n")
    print(table(["prepare", "wall s", "MB/s", "MB/s per worker", "time vs uncurated", "documents kept"],
                pipeline_rows))  # fmt: skip
    print("\nWhat each stage removed or changed (the curated run's manifest; each stage sees what the ones before "
          "it kept):\n")  # fmt: skip
    print(table(["stage", "language", "documents seen", "removed or changed", "share", "MB", "reasons (all languages)"],
                removals(runs["curated, 2 workers"][1])))  # fmt: skip
    print("\nMB = 10^6 bytes of UTF-8 text.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
