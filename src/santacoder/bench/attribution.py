"""The attribution index's costs: build rate, bytes per token, and query latency, at SantaCoder-like scale on a
laptop: about 90M tokens.

    python -m santacoder.bench.attribution             # ~95M tokens (the standard library, 10 renamed copies)
    python -m santacoder.bench.attribution --smoke     # the json package, one copy: the suite runs this

The corpus is the Python standard library; copy ``c`` > 0 has every identifier suffixed with ``_c<c>`` (keywords
kept), so the copies are distinct text, not duplicates a suffix array would find in one look. A BPE of
``--vocab-size`` tokens is trained on a sample; the corpus is tokenized into prepared shards (2 by default), which
is the reference time the builds are compared with. Then each shard's exact index (infini-gram's suffix array) and
fuzzy index (tantivy's BM25) are built, timed apart. Queries: ``--queries`` snippets of 400 tokens cut at random
from the indexed documents, each answered by ``attribute`` (spans, documents, BM25 rerank, similar files, verdict)
and by the exact tier alone (its maximal spans at every one of the 400 positions), read both ways (in memory, as
``ExactIndex`` reads an index that fits, and with infini-gram's defaults for an index larger than memory); and a
count of the snippet's first 64 tokens by the suffix array against the reference it replaces, a scan of the token
files (``bytes.find`` over memory maps, C speed), which must agree.
"""

from __future__ import annotations

import argparse
import json
import keyword
import mmap
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from santacoder.bench.common import machine, table
from santacoder.data.corpus import Corpus, default_source
from santacoder.data.shards import ShardWriter, write_manifest
from santacoder.text.tokenizer import CodeTokenizer, train_tokenizer

IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
KEEP = set(keyword.kwlist) | {"self", "cls", "None", "True", "False"}
SNIPPET_TOKENS = 400
SCAN_TOKENS = 64


def renamed(text: str, copy: int) -> str:
    if copy == 0:
        return text
    return IDENTIFIER.sub(lambda m: m[0] if m[0] in KEEP else f"{m[0]}_c{copy}", text)


def write_shards(out: Path, documents: list, tokenizer: CodeTokenizer, copies: int, shards: int) -> tuple[int, float]:
    """Prepared shards of ``copies`` renamed copies of ``documents``, document k of every copy to shard k % shards;
    the tokens written and the seconds tokenizing took."""
    writers = [ShardWriter(out, rank, tokenizer) for rank in range(shards)]
    tokens, seconds, k = 0, 0.0, 0
    for copy in range(copies):
        for start in range(0, len(documents), 64):
            batch = [renamed(doc.text, copy) for doc in documents[start : start + 64]]
            began = time.perf_counter()
            ids = tokenizer.encode_batch(batch)
            seconds += time.perf_counter() - began
            for doc, text, doc_ids in zip(documents[start : start + 64], batch, ids, strict=True):
                writers[k % shards].add("train", doc_ids, {"id": f"c{copy}/{doc.name}", "path": doc.name,
                                                           "language": "python", "bytes": len(text)})  # fmt: skip
                tokens += len(doc_ids) + 1
                k += 1
    for writer in writers:
        writer.close()
    tokenizer.save(out / "tokenizer.json")
    manifest = {"format": 1, "tokenizer": tokenizer.fingerprint(), "fingerprint": "bench", "tasks": shards,
                "languages": {}, "splits": {}}  # fmt: skip
    for split in ("train", "val"):
        dirs = [f"shards/{rank:05d}/{split}" for rank in range(shards)]
        metas = [json.loads((out / d / "meta.json").read_text()) for d in dirs]
        manifest["splits"][split] = {"num_tokens": sum(m["num_tokens"] for m in metas),
                                     "num_docs": sum(m["num_docs"] for m in metas), "shards": dirs}  # fmt: skip
    write_manifest(out, manifest)
    return tokens, seconds


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the json package, one copy, a few queries")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args(argv)
    try:
        from santacoder.search.attribution import AttributionIndex, attribute
        from santacoder.search.exact import ExactIndex
        from santacoder.search.index import build_index
    except ImportError as e:
        print(f"skipped: attribution needs its extra ({e}); install it with: pip install 'santacoder[attribution]'")
        return 0
    source = default_source() / "json" if args.smoke else default_source()
    copies, vocab, queries = (1, 1024, 5) if args.smoke else (args.copies, args.vocab_size, args.queries)
    documents = list(Corpus(source, [".py"]))
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared"
        tokenizer = train_tokenizer((d.text for d in rng.sample(documents, min(300, len(documents)))), vocab)
        text_bytes = sum(len(renamed(d.text, c).encode("utf-8")) for d in documents for c in range(copies))
        tokens, tokenize_s = write_shards(prepared, documents, tokenizer, copies, args.shards)

        began = time.perf_counter()
        record = build_index(prepared, Path(tmp) / "index")
        build_s = time.perf_counter() - began
        exact_s = sum(_recorded(Path(tmp) / "index" / s["exact"], "index.json") for s in record["shards"])
        fuzzy_s = sum(_recorded(Path(tmp) / "index" / s["fuzzy"], "fuzzy.json") for s in record["shards"])
        table_bytes = sum(s["exact_bytes"] for s in record["shards"])
        exact_new = sum(p.stat().st_size for s in record["shards"] for p in (Path(tmp) / "index" / s["exact"]).iterdir()
                        if p.name != "tokenized.0")  # fmt: skip
        fuzzy_bytes = sum(s["fuzzy_bytes"] for s in record["shards"])

        index = AttributionIndex(Path(tmp) / "index")
        # the engine as infini-gram configures it for an index larger than memory (read-ahead, a thread per position)
        on_disk = ExactIndex(index.exact.index_dirs, tokenizer.eod_id, len(tokenizer), in_memory=False)
        full, spans_only, spans_disk, counts, scans, found = [], [], [], [], [], 0
        files = [open(Path(s["store"]) / "tokens.bin", "rb") for s in record["shards"]]  # noqa: SIM115
        maps = [mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) for f in files]
        for _ in range(queries):
            shard = rng.randrange(len(record["shards"]))
            doc = rng.randrange(record["shards"][shard]["num_docs"])
            ids, _ = index.exact.document(shard, doc)
            if len(ids) <= SNIPPET_TOKENS:
                ids = ids + index.exact.document(shard, (doc + 1) % record["shards"][shard]["num_docs"])[0]
            start = rng.randrange(max(1, len(ids) - SNIPPET_TOKENS))
            snippet = ids[start : start + SNIPPET_TOKENS]
            text = tokenizer.decode(snippet)
            began = time.perf_counter()
            answer = attribute(text, index)
            full.append(time.perf_counter() - began)
            found += answer.kind == "copied"
            began = time.perf_counter()
            spans = index.exact.spans(tokenizer.encode(text))
            spans_only.append(time.perf_counter() - began)
            began = time.perf_counter()
            assert on_disk.spans(tokenizer.encode(text)) == spans  # both ways of reading give one answer
            spans_disk.append(time.perf_counter() - began)
            needle = np.asarray(snippet[:SCAN_TOKENS], dtype=np.uint16).tobytes()
            began = time.perf_counter()
            scanned = sum(_count(m, needle) for m in maps)
            scans.append(time.perf_counter() - began)
            began = time.perf_counter()
            counted = index.exact.count(snippet[:SCAN_TOKENS])
            counts.append(time.perf_counter() - began)
            assert counted == scanned, (counted, scanned)  # the suffix array counts what a scan finds
        for m, f in zip(maps, files, strict=True):
            m.close()
            f.close()

    print(
        f"Attribution index: {machine()}; the standard library{' (json only)' if args.smoke else ''}, {copies} "
        f"renamed cop{'y' if copies == 1 else 'ies'}: {record['num_docs']:,} documents, {text_bytes / 1e6:.1f} MB, "
        f"{tokens:,} tokens (BPE vocabulary {vocab}) in {len(record['shards'])} shards\n"
    )
    builds = [
        ("tokenize (the reference)", tokenize_s),
        ("exact: suffix array (infini-gram)", exact_s),
        ("fuzzy: BM25 (tantivy)", fuzzy_s),
        ("santacoder index (both, and decoding the texts)", build_s),
    ]
    rows = [[name, f"{s:.1f}", f"{tokens / s:,.0f}", f"{s / tokenize_s:.2f}x"] for name, s in builds]
    print(table(["build", "s", "tokens/s", "time vs tokenizing"], rows))
    print()
    print(table(["index size", "bytes", "per token"], [
        ["suffix array (table.0)", f"{table_bytes:,}", f"{table_bytes / tokens:.2f}"],
        ["exact index, new files (the tokens are the shards', hard-linked)", f"{exact_new:,}",
         f"{exact_new / tokens:.2f}"],
        ["fuzzy index (document numbers only)", f"{fuzzy_bytes:,}", f"{fuzzy_bytes / tokens:.2f}"],
    ]))  # fmt: skip
    print()
    ms = lambda xs, q: f"{1000 * percentile(xs, q):.1f}"  # noqa: E731
    reference = statistics.median(scans)
    print(table(["query (400-token snippet)", "p50 ms", "p95 ms", "p50 vs scanning"], [
        [f"count its first {SCAN_TOKENS} tokens by a scan (the reference)", ms(scans, 50), ms(scans, 95), "1.00x"],
        [f"count its first {SCAN_TOKENS} tokens (suffix array)", ms(counts, 50), ms(counts, 95),
         f"{statistics.median(counts) / reference:.2f}x"],
        [f"exact spans (suffix array, read {'in memory' if index.exact.in_memory else 'from disk'})",
         ms(spans_only, 50), ms(spans_only, 95), f"{statistics.median(spans_only) / reference:.2f}x"],
        ["exact spans, read as an index larger than memory (infini-gram's defaults)", ms(spans_disk, 50),
         ms(spans_disk, 95), f"{statistics.median(spans_disk) / reference:.2f}x"],
        ["attribute (spans, documents, BM25, similar, verdict)", ms(full, 50), ms(full, 95),
         f"{statistics.median(full) / reference:.2f}x"],
    ]))  # fmt: skip
    print(f"\n{found} of {queries} snippets cut from the indexed documents came back as copied.")
    return 0


def _recorded(directory: Path, record: str) -> float:
    return float(json.loads((directory / record).read_text()).get("build_seconds", 0.0))


def _count(data: mmap.mmap, needle: bytes) -> int:
    """Occurrences of ``needle`` at token boundaries (even byte offsets), by ``find``."""
    count, at = 0, data.find(needle)
    while at != -1:
        count += at % 2 == 0
        at = data.find(needle, at + 1)
    return count


if __name__ == "__main__":
    sys.exit(main())
