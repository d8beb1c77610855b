"""What a curation stage decides for one document, and the report of a stage's decisions.

A document-local stage is any object with a ``name`` and ``decide(text, meta) -> Verdict``; ``meta`` holds the
document's metadata (``id``, ``language``: "python", "java", "javascript", ... or None, ``stars``, ``repo``,
``path``, ``license``; any may be None). The prepare pipeline applies the stages in order and counts every
decision in a ``StageReport``, which goes to the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXAMPLES = 5  # ids kept per reason, to look at


@dataclass(frozen=True)
class Verdict:
    """Keep the document as it is (the default), remove it (``removed`` says why, a short snake_case reason), or
    keep it with another text (``text``; ``changes`` counts what was replaced, e.g. ``{"email": 2}``)."""

    removed: str | None = None
    text: str | None = None
    changes: dict[str, int] = field(default_factory=dict)


KEEP = Verdict()


def remove(reason: str) -> Verdict:
    return Verdict(removed=reason)


def change(text: str, changes: dict[str, int]) -> Verdict:
    return Verdict(text=text, changes=dict(changes))


class StageReport:
    """Documents and bytes a stage saw, removed and changed, per language, with reasons and example ids; merged
    over tasks with ``merge``."""

    def __init__(self, stage: str):
        self.stage = stage
        self.languages: dict[str, dict[str, int]] = {}
        self.reasons: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def _counts(self, language: str | None) -> dict[str, int]:
        keys = ("seen_docs", "seen_bytes", "removed_docs", "removed_bytes", "changed_docs", "changed_bytes")
        return self.languages.setdefault(language or "unknown", dict.fromkeys(keys, 0))

    def count(self, verdict: Verdict, language: str | None, n_bytes: int, doc_id: str) -> None:
        counts = self._counts(language)
        counts["seen_docs"] += 1
        counts["seen_bytes"] += n_bytes
        if verdict.removed:
            counts["removed_docs"] += 1
            counts["removed_bytes"] += n_bytes
            self._note(verdict.removed, doc_id)
        elif verdict.text is not None:
            counts["changed_docs"] += 1
            counts["changed_bytes"] += n_bytes
            for what, n in sorted(verdict.changes.items()):
                self._note(what, doc_id, n)

    def _note(self, reason: str, doc_id: str, n: int = 1) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + n
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES:
            examples.append(doc_id)

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "languages": dict(sorted(self.languages.items())),
            "reasons": dict(sorted(self.reasons.items())),
            "examples": dict(sorted(self.examples.items())),
        }

    @staticmethod
    def merge(reports: list[dict]) -> dict:
        """One stage's reports of several tasks (in task order: the examples are the first tasks')."""
        total = StageReport(reports[0]["stage"] if reports else "")
        for report in reports:
            for language, counts in report["languages"].items():
                mine = total._counts(language)
                for key, value in counts.items():
                    mine[key] += value
            for reason, n in report["reasons"].items():
                total.reasons[reason] = total.reasons.get(reason, 0) + n
            for reason, ids in report["examples"].items():
                examples = total.examples.setdefault(reason, [])
                examples.extend(ids[: EXAMPLES - len(examples)])
        return total.to_dict()


def summarize(report: dict) -> str:
    """One line for a stage's merged report: what it removed or changed, of what it saw, and why."""
    totals = {key: sum(counts[key] for counts in report["languages"].values()) for key in (
        "seen_docs", "seen_bytes", "removed_docs", "removed_bytes", "changed_docs")}  # fmt: skip
    why = ", ".join(f"{reason} {n:,}" for reason, n in sorted(report["reasons"].items(), key=lambda kv: -kv[1]))
    done = f"removed {totals['removed_docs']:,}"
    if totals["changed_docs"]:
        done += f", changed {totals['changed_docs']:,}"
    return (
        f"{report['stage']}: {done} of {totals['seen_docs']:,} documents "
        f"({totals['removed_bytes'] / 1e6:.2f} of {totals['seen_bytes'] / 1e6:.2f} MB removed)"
        + (f"; {why}" if why else "")
    )
