"""The package's layers (README: Layout) hold: no import cycles, and the import contracts of `make lint` are kept.
The contracts are checked here too, on a copy of the package with one forbidden import added, to show they fail."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp", reason="import-linter (a dev dependency: make install) is not installed")

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the project's contracts (pyproject.toml) on the package under ``src``."""
    cwd.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "pyproject.toml", cwd / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in graph.modules or not imported.startswith("santacoder"):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module.startswith("santacoder") and module not in index:
            visit(module)
    return found


def test_the_import_graph_has_no_cycles():
    graph = grimp.build_graph("santacoder", cache_dir=None)
    assert len([m for m in graph.modules if m.startswith("santacoder.")]) > 50  # the whole package was read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for importer, imported in [("santacoder.a", "santacoder.b"), ("santacoder.b", "santacoder.c"),
                               ("santacoder.c", "santacoder.a"), ("santacoder.c", "santacoder.d")]:  # fmt: skip
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [["santacoder.a", "santacoder.b", "santacoder.c"]]


def test_the_contracts_are_kept(tmp_path):
    done = lint_imports(REPO / "src", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Contracts: 6 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    "module,line,contract",
    [
        ("model/gpt.py", "import santacoder.training.task", "Layers: each layer imports only the layers below it"),
        ("config.py", "from santacoder.model.gpt import GPT", "No cycles: siblings at every depth"),
        ("data/dataset.py", "from santacoder.checkpoints.format import META_KEY", "Layers: each layer imports"),
        ("checkpoints/format.py", "from santacoder.checkpoints.loading import load", "Checkpoints, bottom up"),
        ("evaluation/perplexity.py", "from santacoder import load", "The facade (santacoder, santacoder.api)"),
        ("text/fim.py", "import torch", "Text and the model config need no torch"),
        ("model/loss.py", "import lightning", "The model, checkpoints and inference run without Lightning"),
    ],
    ids=["model->training", "cycle", "data->ckpt", "format->loading", "facade", "text->torch", "model->lightning"],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract):
    package = tmp_path / "src" / "santacoder"
    shutil.copytree(REPO / "src" / "santacoder", package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(package / module, "a") as f:
        f.write(f"\n{line}  # noqa\n")
    done = lint_imports(tmp_path / "src", tmp_path / "lint")
    assert done.returncode == 1, done.stdout[-3000:]
    summary = done.stdout.split("Broken contracts", 1)[0].replace(" \n", " ")
    assert f"{contract}" in summary and summary.split(contract, 1)[1].split("\n", 1)[0].endswith("BROKEN"), summary
    broken = done.stdout.split("Broken contracts", 1)[1]
    importer = "santacoder." + module.removesuffix(".py").replace("/", ".")
    assert importer in broken or importer.removeprefix("santacoder") in broken  # it names the importer
