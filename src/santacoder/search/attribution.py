"""``attribute(text or ids, index)``: where a piece of code could come from in the data a model trained on.

1. Tokenized with the index's tokenizer (the model's), so the ids are the ones the model saw. Each verbatim span
   of at least ``min_len`` tokens (32: about 100 characters of code) found in the training tokens is reported,
   longest first, with its number of occurrences and up to 10 documents, ranked by BM25 against the whole snippet
   (OLMoTrace's rerank: the documents that share the most with the snippet, not only with the span).
2. Then the fuzzy tier, for code edited after it was copied: the BM25 top documents, kept only when at least
   half of the snippet's 5-grams of code words are in them (BM25 always answers; containment says whether it
   is really there).
3. A one-line verdict: "copied: 412 characters verbatim from 2 documents under MIT, Apache-2.0" (spans covering
   at least 150 characters, or any span when no similar document is found), "similar to <path> (68% of its
   5-grams)", or "not found".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from santacoder.errors import ConfigError
from santacoder.search.exact import ExactIndex
from santacoder.search.fuzzy import SIMILAR_CONTAINMENT, FuzzyIndex, containment
from santacoder.search.index import read_index_record
from santacoder.text.tokenizer import CodeTokenizer

MIN_LEN = 32  # tokens: ~100 characters at a code BPE's ~3 characters per token
# "copied" from this many verbatim characters (GitHub Copilot's public-code filter blocks matches over 150
# characters); shorter spans are still listed, but a similar file decides the verdict
COPIED_CHARACTERS = 150
MAX_COUNT = 1000  # occurrences: licence headers legitimately repeat thousands of times
FUZZY_TOP = 5  # BM25 candidates checked per shard
RERANK_TOP = 100  # BM25 scores looked up per shard to rank a span's documents


@dataclass
class Source:
    shard: int
    doc: int
    id: str | None = None
    repo: str | None = None
    path: str | None = None
    license: str | None = None
    language: str | None = None
    bm25: float = 0.0

    @property
    def name(self) -> str:
        where = self.path or self.id or f"document {self.doc} of shard {self.shard}"
        return f"{self.repo}/{where}" if self.repo else where


@dataclass
class CopiedSpan:
    start: int  # character offsets in the snippet, end exclusive
    end: int
    tokens: int
    count: int  # occurrences in the training tokens
    text: str
    sources: list[Source] = field(default_factory=list)
    # the first optimizer step whose batch held the span's first token (of the documents listed), for an index
    # of a run (santacoder.search.steps); None for prepared data alone, or a mixture
    first_step: int | None = None
    # whether the run got that far (its metrics.json's last step); None when unknown
    trained_on: bool | None = None


@dataclass
class Similar:
    source: Source
    containment: float


@dataclass
class Attribution:
    verdict: str
    kind: str  # "copied", "similar" or "not found"
    copied_characters: int
    spans: list[CopiedSpan]
    similar: list[Similar]

    def to_dict(self) -> dict:
        return asdict(self)


class AttributionIndex:
    """An index directory written by ``santacoder index`` (``santacoder.search.index``), opened for queries.
    ``in_memory``: how the exact tier is read (``ExactIndex``); None decides by its size and the machine's memory."""

    def __init__(self, directory: str | Path, in_memory: bool | None = None):
        self.directory = Path(directory).expanduser()
        self.record = read_index_record(self.directory)
        self.tokenizer = CodeTokenizer.from_file(self.directory / "tokenizer.json")
        if self.tokenizer.fingerprint() != self.record["tokenizer"]:
            raise ConfigError(f"{str(self.directory)!r} has another tokenizer.json than its index: build it again")
        shards = self.record["shards"]
        self._order = None  # the run's training order, read on first use (first_step)
        try:
            self.exact = ExactIndex([self.directory / s["exact"] for s in shards], self.record["eod_id"],
                                    self.record["vocab_size"], in_memory)  # fmt: skip
            self.fuzzy = [FuzzyIndex(self.directory / s["fuzzy"]) for s in shards]
        except (OSError, ValueError, RuntimeError) as e:
            raise ConfigError(f"the attribution index {str(self.directory)!r} is damaged ({e}): build it again") from e

    def first_step(self, shard: int, doc: int, position: int) -> int | None:
        """The step at which the run this index was built from first trained on token ``position`` of document
        ``doc`` of shard ``shard``; None when the index is not a run's or the run trained on a mixture."""
        if self._order is False:
            return None
        if self._order is None:
            run = Path(self.record["source"])
            if not (run / ".hydra" / "config.yaml").is_file():
                self._order = False
                return None
            from santacoder.search.steps import TrainingOrder

            try:
                self._order = TrainingOrder(run, self.record["num_tokens"])
            except ConfigError:  # a mixture: no single sequence to place the span in
                self._order = False
                return None
            self._starts = np.cumsum([0] + [s["num_tokens"] for s in self.record["shards"]])
            self._offsets = {}
        shards = self.record["shards"]
        if shard not in self._offsets:
            self._offsets[shard] = np.load(Path(shards[shard]["store"]) / "doc_offsets.npy", mmap_mode="r")
        # the split's sequence: an in-run store is it; prepared shards are concatenated without their leading eod
        token = int(self._starts[shard]) + int(self._offsets[shard][doc]) + position
        return self._order.step_of(token)

    def trained_steps(self) -> int | None:
        """The optimizer steps the run behind this index took (its metrics.json), if known."""
        return self._order.trained_steps if self._order else None

    def text_of(self, shard: int, doc: int) -> str:
        ids, _ = self.exact.document(shard, doc)
        return self.tokenizer.decode(ids)

    def source(self, shard: int, doc: int, metadata: dict | None = None, bm25: float = 0.0) -> Source:
        if metadata is None:
            _, metadata = self.exact.document(shard, doc)
        fields = {k: metadata.get(k) for k in ("id", "repo", "path", "license", "language")}
        return Source(shard=shard, doc=doc, bm25=bm25, **fields)


def attribute(
    snippet: str | list[int], index: AttributionIndex | str | Path, min_len: int = MIN_LEN, max_count: int = MAX_COUNT
) -> Attribution:
    """Where ``snippet`` (text, or ids of the index's tokenizer) could come from (module docstring)."""
    if not isinstance(index, AttributionIndex):
        index = AttributionIndex(index)
    tokenizer = index.tokenizer
    if isinstance(snippet, str):
        text, ids = snippet, tokenizer.encode(snippet)
    else:
        ids = [int(i) for i in snippet]
        text = tokenizer.decode(ids)
    if not text.strip():
        raise ConfigError("the snippet is empty: give the code to attribute")
    # byte-level BPE: the ids' bytes are the text's, so token k starts at byte ends[k-1]
    ends = np.cumsum([len(tokenizer.decode_bytes([i])) for i in ids]) if ids else np.zeros(0, dtype=np.int64)
    raw = text.encode("utf-8", errors="surrogatepass")

    def chars(token: int) -> int:
        start = int(ends[token - 1]) if token > 0 else 0
        return len(raw[:start].decode("utf-8", errors="ignore"))

    scores = _bm25_scores(index, text)
    spans = []
    for span in index.exact.spans(ids, min_len=min_len, max_cnt=max_count):
        sources = [index.source(hit.index, hit.doc_ix, hit.metadata, scores.get((hit.index, hit.doc_ix), 0.0))
                   for hit in span.docs]  # fmt: skip
        sources.sort(key=lambda s: -s.bm25)
        start, end = chars(span.start), chars(span.end)
        steps = [
            step for hit in span.docs if (step := index.first_step(hit.index, hit.doc_ix, hit.position)) is not None
        ]
        first = min(steps) if steps else None
        trained = index.trained_steps()
        spans.append(CopiedSpan(start, end, span.end - span.start, span.count, text[start:end], sources, first,
                                None if first is None or trained is None else first < trained))  # fmt: skip
    similar = _similar(index, text, scores)
    covered = np.zeros(len(text), dtype=bool)
    for span in spans:
        covered[span.start : span.end] = True
    copied = int(covered.sum())
    return Attribution(_verdict(spans, similar, copied), _kind(spans, similar, copied), copied, spans, similar)


def _bm25_scores(index: AttributionIndex, text: str) -> dict[tuple[int, int], float]:
    scores = {}
    for shard, fuzzy in enumerate(index.fuzzy):
        for doc, score in fuzzy.search(text, k=RERANK_TOP):
            scores[(shard, doc)] = score
    return scores


def _similar(index: AttributionIndex, text: str, scores: dict[tuple[int, int], float]) -> list[Similar]:
    """The fuzzy tier: the best BM25 documents of each shard that hold at least half of the snippet's 5-grams."""
    candidates = sorted(scores.items(), key=lambda kv: -kv[1])
    by_shard: dict[int, int] = {}
    found = []
    for (shard, doc), score in candidates:
        if by_shard.get(shard, 0) >= FUZZY_TOP:
            continue
        by_shard[shard] = by_shard.get(shard, 0) + 1
        share = containment(text, index.text_of(shard, doc))
        if share >= SIMILAR_CONTAINMENT:
            found.append(Similar(index.source(shard, doc, bm25=score), round(share, 3)))
    return sorted(found, key=lambda s: (-s.containment, -s.source.bm25))


def _kind(spans: list[CopiedSpan], similar: list[Similar], copied: int) -> str:
    if spans and (copied >= COPIED_CHARACTERS or not similar):
        return "copied"
    return "similar" if similar else "not found"


def _verdict(spans: list[CopiedSpan], similar: list[Similar], copied: int) -> str:
    if _kind(spans, similar, copied) == "copied":
        documents = {(s.shard, s.doc): s for span in spans for s in span.sources}
        licenses = sorted({s.license or "an unknown license" for s in documents.values()})
        many = "document" if len(documents) == 1 else "documents"
        return f"copied: {copied:,} characters verbatim from {len(documents)} {many} under {', '.join(licenses)}"
    if similar:
        best = similar[0]
        more = f" and {len(similar) - 1} more" if len(similar) > 1 else ""
        license = best.source.license or "an unknown license"
        return f"similar to {best.source.name} ({best.containment:.0%} of its 5-grams, {license}){more}"
    return "not found"
