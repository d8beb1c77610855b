"""``curation`` of configs/prepare.yaml -> the stages of the prepare pipeline, checked before any work.

Order, as the paper's data went: the document-local filters and decontamination, then exact and near
deduplication (on the files that passed them), then PII redaction (on the files that are kept: it is the slowest
stage). ``settings`` is what prepare.json records: a resume with other curation is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from santacoder.data.corpus import LANGUAGES, Corpus
from santacoder.data.curation.decontamination import Decontaminator, benchmark_strings, humaneval_strings
from santacoder.data.curation.dedup import CURVE_POINTS, detection_curve, detection_probability
from santacoder.data.curation.filters import BasicFilter, CommentsFilter, FertilityFilter, StarsFilter, median_fertility
from santacoder.data.curation.pii import PIIRedactor
from santacoder.errors import ConfigError
from santacoder.text.tokenizer import CodeTokenizer

log = logging.getLogger(__name__)

SAMPLE_READ_FACTOR = 10


@dataclass
class Curation:
    before_dedup: list = field(default_factory=list)  # document-local stages, in order
    exact_dedup: bool = False
    near_dedup: dict | None = None  # n_grams, bands, rows, seed
    after_dedup: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def dedup(self) -> bool:
        return self.exact_dedup or self.near_dedup is not None


def build_curation(cfg, tokenizer: CodeTokenizer, sources: list[str]) -> Curation:
    c = cfg.get("curation")
    if c is None or not c.get("enabled", False):
        return Curation(settings={"enabled": False})
    settings = OmegaConf.to_container(c, resolve=True)
    curation = Curation(settings=settings)
    on = lambda name: bool(c[name].enabled)  # noqa: E731
    if on("basic"):
        b = c.basic
        _check_positive("basic.max_line_length", b.max_line_length)
        _check_positive("basic.max_mean_line_length", b.max_mean_line_length)
        _check_fraction("basic.min_alphanum_fraction", b.min_alphanum_fraction)
        curation.before_dedup.append(BasicFilter(
            max_line_length=b.max_line_length, max_mean_line_length=b.max_mean_line_length,
            min_alphanum_fraction=b.min_alphanum_fraction, max_bytes=cfg.max_doc_bytes, generated=b.generated,
        ))  # fmt: skip
    if on("comments"):
        _check_fraction("comments.min_ratio", c.comments.min_ratio)
        _check_fraction("comments.max_ratio", c.comments.max_ratio)
        if c.comments.min_ratio > c.comments.max_ratio:
            raise ConfigError(
                f"curation.comments.min_ratio={c.comments.min_ratio} is above max_ratio={c.comments.max_ratio}"
            )
        curation.before_dedup.append(CommentsFilter(c.comments.min_ratio, c.comments.max_ratio))
    if on("stars"):
        if not isinstance(c.stars.min_stars, int) or c.stars.min_stars < 0:
            raise ConfigError(f"curation.stars.min_stars={c.stars.min_stars} must be a non-negative integer")
        curation.before_dedup.append(StarsFilter(c.stars.min_stars))
    if on("fertility"):
        _check_fraction("fertility.min_relative", c.fertility.min_relative, upper=10.0)
        reference = median_fertility(tokenizer, _sample_by_language(cfg, sources, c.fertility.sample_docs))
        reference = {language: round(value, 6) for language, value in sorted(reference.items())}
        settings["fertility"]["reference"] = reference
        log.info("fertility (characters per token) medians under this tokenizer: %s", reference)
        curation.before_dedup.append(FertilityFilter(tokenizer, reference, c.fertility.min_relative))
    if on("decontamination"):
        benchmarks = {"humaneval": humaneval_strings()} if c.decontamination.humaneval else {}
        for entry in c.decontamination.benchmarks or []:
            if not entry.get("path") or not entry.get("fields"):
                raise ConfigError(
                    f"curation.decontamination.benchmarks entry {OmegaConf.to_container(entry)} needs a path and "
                    "fields, e.g. {name: mbpp, path: /data/mbpp.jsonl, fields: [text, code]}"
                )
            name = entry.get("name") or Path(entry.path).stem
            benchmarks[name] = benchmark_strings(str(entry.path), list(entry.fields))
        if benchmarks:
            decontaminator = Decontaminator(benchmarks)
            settings["decontamination"]["strings"] = len(decontaminator.strings)
            curation.before_dedup.append(decontaminator)
    curation.exact_dedup = on("exact_dedup")
    if on("near_dedup"):
        n = c.near_dedup
        for key in ("n_grams", "bands", "rows"):
            _check_positive(f"near_dedup.{key}", n[key])
        curation.near_dedup = {"n_grams": n.n_grams, "bands": n.bands, "rows": n.rows, "seed": n.seed}
        settings["near_dedup"]["detection"] = {
            f"{s:.2f}": round(detection_probability(s, n.bands, n.rows), 4) for s in CURVE_POINTS
        }  # P(removed) at each Jaccard similarity, in the manifest beside what it removed
        log.info("%s", detection_curve(n.bands, n.rows, CURVE_POINTS))
    if on("pii"):
        curation.after_dedup.append(PIIRedactor(emails=c.pii.emails, ips=c.pii.ips, keys=c.pii.keys))
    return curation


def _sample_by_language(cfg, sources: list[str], per_language: int) -> dict[str, list[str]]:
    """The first ``per_language`` documents of each language, in the sources' file order: the same sample on every
    start, whatever the number of tasks. Reading stops once the extensions' languages are full, or after
    ``SAMPLE_READ_FACTOR`` times as many documents in all (a table's rows can hold languages no extension names)."""
    _check_positive("fertility.sample_docs", per_language)
    wanted = {LANGUAGES[ext] for ext in cfg.extensions if ext in LANGUAGES}
    texts: dict[str, list[str]] = {}
    budget = SAMPLE_READ_FACTOR * per_language * max(1, len(wanted))
    for source in sources:
        corpus = Corpus(source, list(cfg.extensions), cfg.max_doc_bytes, setting="source")
        for path in corpus.files:
            for doc in corpus.read_file(path):
                language, budget = doc.meta.get("language"), budget - 1
                if language and len(texts.setdefault(language, [])) < per_language:
                    texts[language].append(doc.text)
            full = all(len(texts.get(lang, ())) >= per_language for lang in wanted)
            if full or budget <= 0:
                return texts
    return texts


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"curation.{name}={value!r} must be a positive integer")


def _check_fraction(name: str, value, upper: float = 1.0) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= upper:
        raise ConfigError(f"curation.{name}={value!r} must be a number between 0 and {upper:g}")
