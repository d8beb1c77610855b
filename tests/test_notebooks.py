"""notebooks/ executed top to bottom on CPU, as a reader would run them: a notebook whose cell raises (each one
asserts what it shows) fails its test. Committed notebooks hold no outputs. `make figures` draws from a real run."""

import importlib.util
import json
import os
import sysconfig
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# the figures each notebook draws (length histograms and FIM shares; time and memory, KV-cache bytes; a run's curves)
FIGURES = {"01_data_and_fim": 2, "02_model_and_attention": 2, "03_runs_and_infilling": 1}


def execute(path: Path, tmp_path: Path, timeout: int = 300, parameters: dict | None = None,
            env: dict | None = None) -> nbformat.NotebookNode:  # fmt: skip
    """Run the notebook in a kernel of this interpreter, in ``tmp_path``. ``parameters`` are assigned after the
    notebook's parameters cell (its first code cell), as a reader editing that cell would; ``env`` is the kernel's
    environment (default: this one with PROJECT_ROOT=tmp_path, so whatever a notebook keeps lands there)."""
    nb = nbformat.read(path, as_version=4)
    if parameters:
        cell = next(c for c in nb.cells if c.cell_type == "code")
        cell.source += "\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    if env is None:
        env = {**os.environ, "PROJECT_ROOT": str(tmp_path)}
    # the kernel draws inline, as in JupyterLab (an inherited MPLBACKEND=Agg would draw nothing)
    env = {k: v for k, v in env.items() if k != "MPLBACKEND"} | {"WANDB_MODE": "offline"}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.km = client.create_kernel_manager()
    client.start_new_kernel(env=env)  # the kernel runs this interpreter (the project's venv)
    client.start_new_kernel_client()
    try:
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    finally:
        client._cleanup_kernel()
    return nb


# what a test changes in a notebook's parameters: 01's default corpus, the whole standard library, would take
# minutes to tokenize without make train's cache; a package of it takes seconds
PARAMETERS = {"01_data_and_fim": {"SOURCE": str(Path(sysconfig.get_paths()["stdlib"]) / "email"), "VOCAB_SIZE": 1024}}


def test_there_are_notebooks():
    assert [p.stem for p in NOTEBOOKS] == list(FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_hold_no_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip the outputs"


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    before = set(Path(tempfile.gettempdir()).glob("nb*"))
    nb = execute(path, tmp_path, parameters=PARAMETERS.get(path.stem))
    assert set(Path(tempfile.gettempdir()).glob("nb*")) <= before, "no temporary directory left (nb01-, nb03-)"
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images == FIGURES[path.stem], "every figure the notebook draws is shown, once"


@pytest.mark.integration
def test_figures_are_drawn_from_the_newest_run_that_validated(corpus_dir, data_dir, tmp_path):
    """`make figures` after the README's `trainer.max_steps=20` example (a run shorter than one validation
    interval, so without val/loss) draws the newest run that validated, into logs/figures, not docs/figures."""
    import subprocess
    import sys

    from hydra.core.global_hydra import GlobalHydra

    import run_overrides
    from santacoder.training.task import train

    runs = tmp_path / "logs" / "train" / "runs"
    common = [*run_overrides.data(corpus_dir, seq_len=32, batch_size=4), "trainer.log_every_n_steps=2",
              "model.config.n_layer=1", "callbacks.progress_bar.refresh_rate=0"]  # fmt: skip
    for name, steps in (
        ("validated", "trainer.max_steps=20 trainer.val_check_interval=10"),
        ("short", "trainer.max_steps=6"),
    ):
        train(run_overrides.compose_config("train", runs / name, data_dir, *common, *steps.split()))
        GlobalHydra.instance().clear()
    assert "val/loss" not in json.loads((runs / "short" / "metrics.json").read_text())
    script = Path(__file__).resolve().parents[1] / "scripts" / "figures.py"
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script), "--seq-lens", "32", "64"], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"from {runs / 'validated'}" in done.stdout and "skipped 1 newer run(s) without val/loss" in done.stdout
    from santacoder.bench import browser

    out = tmp_path / "logs" / "figures"  # the default: logs/ of the project root (PROJECT_ROOT), ignored by git
    names = ["loss_curve.png", "attention.png"] + (["demo.png"] if browser.chromium() else [])
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # a run named by --run draws whatever it has (its loss curve drawn here in-process: the attention plot and the
    # screenshot were checked above); a directory that is not a run gets one line
    spec = importlib.util.spec_from_file_location("figures", script)
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    figures.loss_curve(runs / "short", tmp_path / "short.png")
    assert (tmp_path / "short.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = subprocess.run([sys.executable, str(script), "--run", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode != 0 and "has no CSV log" in missing.stderr and "Traceback" not in missing.stderr
    (runs / "validated" / "metrics.json").unlink()
    none = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert none.returncode == 1 and "no finished run that validated" in none.stderr, none.stderr[-2000:]
