"""Every value of ``configs/eval.yaml`` checked before any work, each bad one named in one line with what to do.

Hydra gives strings for anything YAML does not read as its type (``allow_code_execution=no`` is the string
"no", which Python would take as true): booleans must be booleans, numbers numbers, in range and finite.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from santacoder.errors import ConfigError

DTYPES = ("auto", "fp32", "bf16", "fp16")
HUMANEVAL_PROBLEMS = 164


def _boolean(value, name: str) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be true or false")


def _integer(value, name: str, low: int, high: int | None = None, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={value!r} must be an integer {span}{' (or null: all)' if none else ''}")


def _number(value, name: str, low: float, *, above: bool = False, high: float | None = None) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if above else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"> {low}" if above else f">= {low}"
        raise ConfigError(f"{name}={value!r} must be a finite number {bound}{f' and <= {high}' if high else ''}")


def _choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(map(str, choices))}")


def check(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value of the eval's config."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("ckpt_path is required: python eval.py ckpt_path=<run dir | .ckpt | HF dir | Megatron dir>")
    if not Path(str(cfg.ckpt_path)).expanduser().exists():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r} does not exist: give a run directory, a .ckpt, a Hugging Face "
                          "or a Megatron-LM checkpoint")  # fmt: skip
    if cfg.tokenizer is not None and not Path(str(cfg.tokenizer)).expanduser().is_file():
        raise ConfigError(f"tokenizer={cfg.tokenizer!r} is not a file: give a tokenizer.json, or null for the model's")
    _boolean(cfg.allow_code_execution, "allow_code_execution")
    device = str(cfg.device)
    if device not in ("auto", "cpu", "cuda", "mps") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"device={cfg.device!r} must be auto, cpu, cuda, cuda:N or mps")
    _choice(cfg.get("dtype", "auto"), "dtype", DTYPES)
    unknown = set(cfg.tasks) - {"perplexity", "fim_single_line", "humaneval"}
    if unknown:
        raise ConfigError(f"tasks {sorted(unknown)} are unknown; the tasks are perplexity, fim_single_line, humaneval")
    for name, task in cfg.tasks.items():
        _boolean(task.enabled, f"tasks.{name}.enabled")
    ppl = cfg.tasks.get("perplexity")
    if ppl is not None:
        _choice(ppl.fim, "tasks.perplexity.fim", ("as_trained", "off"))
        _integer(ppl.limit_batches, "tasks.perplexity.limit_batches", 1, none=True)
    fim = cfg.tasks.get("fim_single_line")
    if fim is not None:
        _choice(fim.source, "tasks.fim_single_line.source", ("humaneval", "corpus"))
        _choice(fim.mode, "tasks.fim_single_line.mode", ("psm", "spm"))
        _integer(fim.limit, "tasks.fim_single_line.limit", 1, none=True)
        _integer(fim.lines_per_file, "tasks.fim_single_line.lines_per_file", 1)
        _integer(fim.max_new_tokens, "tasks.fim_single_line.max_new_tokens", 1)
    he = cfg.tasks.get("humaneval")
    if he is not None:
        prefix = "tasks.humaneval."
        _integer(he.limit, prefix + "limit", 1, HUMANEVAL_PROBLEMS, none=True)
        _integer(he.n_samples, prefix + "n_samples", 1)
        _number(he.temperature, prefix + "temperature", 0.0)
        if he.top_p is not None:
            _number(he.top_p, prefix + "top_p", 0.0, above=True, high=1.0)
        _boolean(he.strip_prompt, prefix + "strip_prompt")
        if (
            not isinstance(he.stops, list | tuple)
            and not OmegaConf.is_list(he.stops)
            or not all(isinstance(s, str) and s for s in he.stops)
        ):
            raise ConfigError(f"{prefix}stops={he.stops!r} must be a list of non-empty strings")
        _integer(he.max_length, prefix + "max_length", 2)
        _integer(he.batch_size, prefix + "batch_size", 1)
        _number(he.timeout, prefix + "timeout", 0.0, above=True)
        _integer(he.workers, prefix + "workers", 1)
        _boolean(he.positive_control, prefix + "positive_control")


def check_against_model(cfg: DictConfig, n_positions: int) -> None:
    """What needs the model's context: the single-line FIM task's new tokens must leave room for a prompt."""
    fim = cfg.tasks.get("fim_single_line")
    if fim is not None and fim.enabled and fim.max_new_tokens >= n_positions - 4:
        raise ConfigError(
            f"tasks.fim_single_line.max_new_tokens={fim.max_new_tokens} leaves no room for a prompt in the "
            f"model's {n_positions} positions: give at most {n_positions - 8}"
        )
