"""HumanEval pass@k as BigCode's evaluation harness measures it (SantaCoder's and StarCoder's published numbers):
the prompt stripped, its eight stop strings, 512 tokens in all; sample completions, save them, then run them in
the sandbox.

Problems are batched across problems (sorted by prompt length; a problem's ``n_samples`` share one prefill and
are never split), and decoding stops once every row of a batch has reached a stop string
(``santacoder.inference.stopping``), with exactly the text of decoding to the limit and cutting afterwards.

Generations are written to a JSONL file before any is executed, each line carrying the fingerprint of the model,
tokenizer and every setting that shapes a sample; a rerun into the same directory resumes from the samples with
the current fingerprint only (others are moved aside to ``<file>.stale.jsonl``, said in one line), ignores samples
of problems outside the current list, and skips (counting) lines that are not samples. The file is rewritten
atomically before new samples are appended, so a kill at any moment loses at most the line being written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from santacoder.evaluation.execution import check_correctness
from santacoder.evaluation.pass_at_k import mean_pass_at_k
from santacoder.inference.stopping import cut_at_stops, generate_until_stops
from santacoder.model.gpt import GPT
from santacoder.text.tokenizer import CodeTokenizer

__all__ = ["STOPS", "CODEX_STOPS", "Harness", "cut_at_stops", "generate_samples", "execute_samples"]

# bigcode-evaluation-harness's `humaneval` task; Codex's (and this project's before) are the first five of them
STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
CODEX_STOPS = ("\ndef", "\nclass", "\nif", "\n#", "\nprint")


@dataclass(frozen=True)
class Harness:
    """Every setting that shapes a sample (all of them enter the samples' fingerprint)."""

    n_samples: int = 1
    temperature: float = 0.2
    top_p: float | None = 0.95
    strip_prompt: bool = True  # the harness's `humaneval` task; `humaneval-unstripped` keeps the final newline
    stops: tuple[str, ...] = STOPS
    max_length: int = 512  # tokens in all, prompt and completion (the harness's max_length_generation)
    batch_size: int = 16  # rows per forward pass
    seed: int = 0

    def prompt(self, problem: dict) -> str:
        return problem["prompt"].strip() if self.strip_prompt else problem["prompt"]

    def budget(self, model: GPT) -> int:
        return min(self.max_length, model.config.n_positions)


def harness_problems(problems: list[dict], harness: Harness) -> list[dict]:
    """The problems as the samples complete them: with the harness's prompt (stripped), so that the program run is
    that prompt + completion + test, as the harness builds it."""
    return [{**p, "prompt": harness.prompt(p)} for p in problems]


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


def model_fingerprint(model: GPT) -> str:
    """A checksum of the weights (names, shapes, dtypes and bytes) and the architecture."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(asdict(model.config), sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(model_id: str, tokenizer: CodeTokenizer, harness: Harness) -> str:
    settings = {"model": model_id, "tokenizer": tokenizer.fingerprint(), **asdict(harness)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _is_sample(line: object) -> bool:
    return (
        isinstance(line, dict)
        and isinstance(line.get("task_id"), str)
        and isinstance(line.get("completion_id"), int)
        and isinstance(line.get("completion"), str)
    )


def read_samples(path: Path) -> tuple[list[dict], int]:
    """The samples on file and how many lines are not samples (a cut last line of a killed run among them)."""
    if not path.is_file():
        return [], 0
    samples, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            parsed = None
        if _is_sample(parsed):
            samples.append(parsed)
        elif line.strip():
            skipped += 1
    return samples, skipped


def _write_atomically(path: Path, samples: Iterable[dict]) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def resume(out: Path, problems: list[dict], fingerprint_: str, n_samples: int, log=None) -> dict[str, list[dict]]:
    """The complete samples on file that the current model and settings made, by task id; the file rewritten
    (atomically) with those, plus the current fingerprint's samples of problems outside this list; samples of
    another fingerprint moved to ``<out>.stale.jsonl``."""
    samples, skipped = read_samples(out)
    current = [s for s in samples if s.get("fingerprint") == fingerprint_]
    stale = [s for s in samples if s.get("fingerprint") != fingerprint_]
    wanted = {p["task_id"] for p in problems}
    by_task: dict[str, dict[int, dict]] = {}
    for sample in current:
        by_task.setdefault(sample["task_id"], {})[sample["completion_id"]] = sample
    complete = {
        t: [ids[i] for i in range(n_samples)] for t, ids in by_task.items() if set(range(n_samples)) <= ids.keys()
    }
    outside = [s for s in current if s["task_id"] not in wanted]
    if log is not None and (stale or skipped or outside):
        log.warning(
            "humaneval: resuming from %s: %d samples of the current model and settings kept, %d of another model "
            "or other settings moved to %s (not scored), %d of problems outside this run kept aside, "
            "%d lines that are not samples skipped",
            out, sum(len(v) for t, v in complete.items() if t in wanted), len(stale),
            out.name + ".stale.jsonl", len(outside), skipped,
        )  # fmt: skip
    if stale:
        with open(out.with_name(out.name + ".stale.jsonl"), "a", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in stale)
    if samples or skipped:
        kept = [s for t, v in complete.items() if t in wanted for s in v]
        _write_atomically(out, kept + outside)
    return {t: v for t, v in complete.items() if t in wanted}


def _batches(rows: list[tuple[int, list[int]]], problems_per_batch: int, slack: int) -> list[list]:
    """Consecutive problems sorted by prompt length, at most ``problems_per_batch`` per batch, and no wider spread
    of lengths than ``slack``: the cache holds the longest prompt and the shortest one's whole budget."""
    batches: list[list[tuple[int, list[int]]]] = []
    for row in sorted(rows, key=lambda r: len(r[1])):
        batch = batches[-1] if batches else None
        if batch and len(batch) < problems_per_batch and len(row[1]) - len(batch[0][1]) <= slack:
            batch.append(row)
        else:
            batches.append([row])
    return batches


def generate_samples(
    model: GPT,
    tokenizer: CodeTokenizer,
    problems: list[dict],
    out: Path,
    harness: Harness,
    *,
    model_id: str | None = None,
    progress: Callable[[int], None] = lambda n: None,
    log=None,
) -> tuple[list[dict], int]:
    """``harness.n_samples`` completions of each of ``problems`` (as the harness prompts them), appended to ``out``
    (JSONL: task_id, completion_id, completion, fingerprint) as each batch ends; and the forward passes made.
    A problem whose prompt cannot fit (``fit_prompt``) gets empty completions without calling the model.
    ``progress(n)`` is told each time n more problems are done."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = fingerprint(model_id or model_fingerprint(model), tokenizer, harness)
    prompted = harness_problems(problems, harness)
    done = resume(out, prompted, stamp, harness.n_samples, log)
    progress(len(done))
    budget = harness.budget(model)
    rows, samples, calls = [], dict(done), 0
    for index, problem in enumerate(prompted):
        if problem["task_id"] in done:
            continue
        ids, _ = fit_prompt(tokenizer, problem, budget - 1)
        if ids is None:  # the function's body left empty: its tests fail
            samples[problem["task_id"]] = [
                {"task_id": problem["task_id"], "completion_id": i, "completion": "", "fingerprint": stamp}
                for i in range(harness.n_samples)
            ]
        else:
            rows.append((index, ids))
    with open(out, "a", encoding="utf-8") as f:
        for problem in prompted:  # the prompts too long to ask about, in order
            if problem["task_id"] in samples and problem["task_id"] not in done:
                f.writelines(json.dumps(s) + "\n" for s in samples[problem["task_id"]])
        progress(len(samples) - len(done))
        per_batch = max(1, harness.batch_size // harness.n_samples)
        for number, batch in enumerate(_batches(rows, per_batch, model.config.n_positions - budget)):
            result = generate_until_stops(
                model, tokenizer, [ids for _, ids in batch], [budget - len(ids) for _, ids in batch], harness.stops,
                num_samples=harness.n_samples, temperature=harness.temperature, top_p=harness.top_p,
                seed=harness.seed + number,
            )  # fmt: skip
            calls += result.model_calls
            for position, (index, _) in enumerate(batch):
                task_id = prompted[index]["task_id"]
                texts = result.texts[position * harness.n_samples : (position + 1) * harness.n_samples]
                samples[task_id] = [
                    {"task_id": task_id, "completion_id": i, "completion": text, "fingerprint": stamp}
                    for i, text in enumerate(texts)
                ]
                f.writelines(json.dumps(s) + "\n" for s in samples[task_id])
            f.flush()
            progress(len(batch))
    ordered = [s for p in prompted for s in samples[p["task_id"]]]
    return ordered, calls


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
