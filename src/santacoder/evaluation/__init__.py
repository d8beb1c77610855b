"""Judging a model: the sandbox that runs generated code (more tasks follow in eval.py)."""

from santacoder.evaluation.execution import check_correctness
from santacoder.evaluation.sandbox import Limits, SandboxUnavailable, run_sandboxed

__all__ = ["Limits", "SandboxUnavailable", "check_correctness", "run_sandboxed"]
