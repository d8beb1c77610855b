"""The first hour of a new user, on a run made by `python train.py`: the README's walkthrough block run as written
(bash, in a project directory laid out like the checkout), `evaluate(compose(...))` from Python and notebook 03 on
that run without PROJECT_ROOT, and a run directory named as the README names it (relative to the project)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_overrides
from test_notebooks import execute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_03 = ROOT / "notebooks" / "03_runs_and_infilling.ipynb"


def readme_walkthrough() -> list[str]:
    """The bash lines of the README's block after ``<!-- walkthrough -->``."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough -->\n```bash\n(.*?)\n```", text, re.DOTALL)
    assert block, "the README has a walkthrough block"
    return block.group(1).splitlines()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory, corpus_dir) -> Path:
    """A project directory as a user's checkout looks after `make train` (entry points, configs, .venv, and a run
    in logs/train/runs), the run made by `python train.py` started from another working directory."""
    project = tmp_path_factory.mktemp("project")
    for name in ("train.py", "eval.py", "configs", ".venv"):
        (project / name).symlink_to(ROOT / name)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    overrides = [
        *run_overrides.data(corpus_dir, seq_len=64, batch_size=8),
        *run_overrides.model(n_layer=2, n_embd=64, n_head=4, n_inner=256, n_positions=256),
        "trainer.max_steps=30", "trainer.val_check_interval=30", "trainer.limit_val_batches=4",
        "callbacks.progress_bar.refresh_rate=0", "extras.print_config=false",
    ]  # fmt: skip
    env = {**os.environ, "PROJECT_ROOT": str(project), "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, str(project / "train.py"), *overrides], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return project


@pytest.fixture(scope="module")
def run_dir(project) -> Path:
    (run,) = (project / "logs" / "train" / "runs").iterdir()
    return run


def test_a_train_py_run_records_its_root_and_evaluates_from_python_without_project_root(
    run_dir, project, tmp_path, monkeypatch
):
    import santacoder
    from santacoder.evaluation.task import evaluate

    assert f"root_dir: {project}" in (run_dir / ".hydra" / "config.yaml").read_text()  # not ${oc.env:...}
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    cfg = santacoder.compose(
        [
            f"ckpt_path={run_dir}",
            "tasks.perplexity.limit_batches=4",
            "tasks.fim_single_line.enabled=false",
            "tasks.humaneval.enabled=false",
        ],  # fmt: skip
        config_name="eval",
        root_dir=tmp_path,
    )
    metrics = evaluate(cfg)
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(trained["val/loss"], abs=1e-4)  # the run's own data and cache


def test_notebook_03_reads_a_train_py_run_named_relative_to_the_project(run_dir, tmp_path):
    """As the README writes paths (logs/train/runs/<run>, from the checkout), though the kernel runs in
    notebooks/ and no PROJECT_ROOT is set: the path is taken relative to the project (here the checkout, so the
    run in a temporary project is reached through ..)."""
    relative = os.path.relpath(run_dir, ROOT)
    assert not (tmp_path / relative).exists()
    env = {k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}
    nb = execute(NOTEBOOK_03, tmp_path, parameters={"RUN_DIR": relative, "WORK_DIR": str(tmp_path)}, env=env)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"run: {ROOT / relative}" in printed


def test_the_readme_walkthrough_runs_as_written(project, run_dir, tmp_path):
    """Each line of the README's walkthrough, in bash, from the project directory; the demo line is started in the
    background, answered over HTTP, then stopped with Ctrl-C (SIGINT), as a user would."""
    lines = readme_walkthrough()
    probe = tmp_path / "probe.py"  # waits until the demo answers over HTTP, then leaves a mark
    probe.write_text(
        "import sys, time, urllib.request\n"
        "for _ in range(120):\n"
        "    try:\n"
        "        urllib.request.urlopen(sys.argv[1], timeout=2)\n"
        "        open(sys.argv[2], 'w').close()\n"
        "        break\n"
        "    except OSError:  # not listening yet\n"
        "        time.sleep(1)\n"
    )
    script = ["set -euo pipefail"]
    for line in lines:
        command = line.split("  #")[0].strip()
        if command.startswith("santacoder demo"):
            # job control on: a script's background job would otherwise ignore SIGINT, Ctrl-C's signal
            script += [
                "set -m",
                f"{command} > demo.log 2>&1 & demo=$!",
                f'{sys.executable} {probe} "http://127.0.0.1:$GRADIO_SERVER_PORT/" demo.up',
                # Ctrl-C, then up to 30 s for the demo to close; still running is a failure
                "kill -INT $demo; for _ in $(seq 30); do kill -0 $demo 2>/dev/null || break; sleep 1; done",
                'if kill -0 $demo 2>/dev/null; then kill -KILL $demo; echo "demo ignored Ctrl-C"; exit 1; fi',
                "wait $demo || true",
                "set +m",
            ]
        else:
            script += [f"echo {shlex.quote('=== ' + command)}", "start=$(date +%s%N)", line,
                       'echo "=== took $(( ($(date +%s%N) - start) / 1000000 )) ms"']  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PROJECT_ROOT")} | {
        "PROJECT_ROOT": str(project),
        "GRADIO_SERVER_PORT": str(free_port()),
        "WANDB_MODE": "offline",
    }
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(str(ROOT / ".venv")))
    (tmp_path / "walkthrough.sh").write_text("\n".join(script) + "\n")
    log = tmp_path / "walkthrough.log"  # read on a failure or a timeout: where it stopped
    start = time.monotonic()
    with open(log, "w") as f:
        try:
            # Ctrl-C's signal as a terminal delivers it: a suite started in the background (`make test &`)
            # inherits SIGINT ignored, which bash and Python would keep for the demo
            done = subprocess.run(["bash", str(tmp_path / "walkthrough.sh")], cwd=project, env=env, stdout=f,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=600,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    print(log.read_text()[-6000:], f"\nwalkthrough: {time.monotonic() - start:.0f} s")
    assert code == 0, log.read_text()[-4000:]
    out = log.read_text()
    final = json.loads((run_dir / "metrics.json").read_text())["val/loss"]
    assert re.search(r"^step:\s+30$", out, re.MULTILINE), "info: the step of last.ckpt"
    assert re.search(rf"^val/loss:\s+{final:.4f}$", out, re.MULTILINE), "info: the run's final val/loss"
    assert re.search(r"^tokenizer:\s+carried", out, re.MULTILINE)
    assert re.search(r"^humaneval/canonical_pass@1\s+1\.0000$", out, re.MULTILINE), "the eval's positive control"
    assert (project / "demo.up").exists(), (project / "demo.log").read_text()[-2000:]
    assert (project / "logs" / "hf" / "tiny-santacoder" / "generation_config.json").is_file()
    assert "def add(a, b):" in out.split("=== python -c")[-1]  # the transformers pipeline's text
    assert "Traceback" not in out
