"""HumanEval pass@k: sample completions, save them, then run them in the sandbox.

Generations are appended to a JSONL file as they are produced, before any is executed, so an interrupted eval
resumes from them (a problem with all its samples on file is not generated again), and execution can be run
again on its own. The ``n_samples`` of a problem share one prefill of its prompt. A prompt longer than the
model's context is cut to the function to complete (``fit_prompt``), never to a garbled prompt.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from santacoder.evaluation.execution import check_correctness
from santacoder.evaluation.pass_at_k import mean_pass_at_k
from santacoder.inference.generation import generate
from santacoder.model.gpt import GPT
from santacoder.text.tokenizer import CodeTokenizer

# The stop sequences of Codex's HumanEval evaluation, which the SantaCoder paper used.
STOPS = ("\ndef", "\nclass", "\nif", "\n#", "\nprint")


def cut_at_stops(text: str, stops: Iterable[str]) -> str:
    """``text`` up to the first stop sequence (exclusive)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


def fit_prompt(tokenizer: CodeTokenizer, problem: dict, room: int) -> tuple[list[int] | None, str]:
    """The token ids of ``problem``'s prompt within ``room`` tokens, and how it fit: ``whole``; ``truncated``: from
    the line that starts ``def <entry_point>(``, so the signature and docstring survive and only the imports and
    helpers before them are dropped (cut at a line of the text: cutting token ids can split a token); or
    ``too_long`` (None): even the function alone does not fit."""
    ids = tokenizer.encode(problem["prompt"])
    if len(ids) <= room:
        return ids, "whole"
    start = re.search(rf"^def {re.escape(problem['entry_point'])}\(", problem["prompt"], re.MULTILINE)
    if start is not None:
        ids = tokenizer.encode(problem["prompt"][start.start() :])
        if len(ids) <= room:
            return ids, "truncated"
    return None, "too_long"


def count_fits(tokenizer: CodeTokenizer, problems: list[dict], room: int) -> dict[str, float]:
    """``humaneval/truncated_prompts`` and ``humaneval/prompts_too_long``: how many prompts ``fit_prompt`` cut,
    and how many it could not fit (their samples are empty, so they score failed)."""
    fits = Counter(fit_prompt(tokenizer, p, room)[1] for p in problems)
    return {
        "humaneval/truncated_prompts": float(fits["truncated"]),
        "humaneval/prompts_too_long": float(fits["too_long"]),
    }


def read_samples(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be cut: that sample is drawn again
            continue
    return samples


def generate_samples(
    model: GPT,
    tokenizer: CodeTokenizer,
    problems: list[dict],
    out: Path,
    *,
    n_samples: int,
    temperature: float,
    top_p: float | None,
    max_new_tokens: int,
    stops: Iterable[str] = STOPS,
    seed: int = 0,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> list[dict]:
    """``n_samples`` completions per problem, appended to ``out`` (JSONL: task_id, completion_id,
    completion); problems already complete in ``out`` are kept as they are. A problem whose prompt cannot fit
    (``fit_prompt``) gets empty completions, written like the others, without calling the model."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, list[dict]] = {}
    for sample in read_samples(out):
        done.setdefault(sample["task_id"], []).append(sample)
    complete = {t for t, s in done.items() if len({x["completion_id"] for x in s}) >= n_samples}
    kept = [s for t in complete for s in sorted(done[t], key=lambda x: x["completion_id"])[:n_samples]]
    with open(out, "w", encoding="utf-8") as f:  # rewritten without partial problems, then appended to
        for sample in kept:
            f.write(json.dumps(sample) + "\n")
        for index, problem in enumerate(progress(problems)):
            if problem["task_id"] in complete:
                continue
            prompt, _ = fit_prompt(tokenizer, problem, model.config.n_positions - max_new_tokens)
            completions = [""] * n_samples  # the function's body left empty: its tests fail
            if prompt is not None:
                rows = generate(
                    model,
                    [prompt],
                    max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    eos_id=tokenizer.eod_id,
                    seed=seed + index,
                    num_samples=n_samples,
                )
                rows = [row[: row.index(tokenizer.eod_id)] if tokenizer.eod_id in row else row for row in rows.tolist()]
                completions = [cut_at_stops(tokenizer.decode(ids), stops) for ids in rows]
            for completion_id, completion in enumerate(completions):
                sample = {"task_id": problem["task_id"], "completion_id": completion_id, "completion": completion}
                f.write(json.dumps(sample) + "\n")
                kept.append(sample)
            f.flush()
    return kept


def execute_samples(problems: list[dict], samples: list[dict], timeout: float, workers: int = 2) -> list[dict]:
    """Each sample through ``check_correctness`` (the sandbox)."""
    by_id = {p["task_id"]: p for p in problems}

    def run(sample: dict) -> dict:
        return check_correctness(by_id[sample["task_id"]], sample["completion"], timeout, sample["completion_id"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, samples))


def canonical_control(problems: list[dict], timeout: float, workers: int = 2) -> tuple[float, list[dict]]:
    """The positive control: each problem's canonical solution through the same sandbox and timeout as the
    samples. Its pass@1 is 1.0 when the plumbing works; below that the sandbox or the harness is broken, not the
    model. Also the results that failed."""
    samples = [{"task_id": p["task_id"], "completion_id": 0, "completion": p["canonical_solution"]} for p in problems]
    results = execute_samples(problems, samples, timeout, workers)
    return sum(r["passed"] for r in results) / max(len(results), 1), [r for r in results if not r["passed"]]


def pass_at_ks(results: list[dict], ks: Iterable[int] = (1, 10, 100)) -> dict[str, float]:
    """``humaneval/pass@k`` for every k that the number of samples per problem allows."""
    per_task: dict[str, list[bool]] = {}
    for r in results:
        per_task.setdefault(r["task_id"], []).append(r["passed"])
    n = [len(v) for v in per_task.values()]
    c = [sum(v) for v in per_task.values()]
    return {f"humaneval/pass@{k}": mean_pass_at_k(n, c, k) for k in ks if n and k <= min(n)}
