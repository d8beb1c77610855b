"""Shared fixtures: a small real-code corpus, a tokenizer trained on it, and Hydra config composition."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import run_overrides  # tests/run_overrides.py
from santacoder.conf.resolvers import setup_hydra
from santacoder.data.corpus import default_source
from santacoder.text.tokenizer import CodeTokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(min(2, torch.get_num_threads()))
setup_hydra()

# Real code with non-ASCII text, plus the two other SantaCoder languages.
JAVA = """// Grüße aus Java
public class Hello {
    public static void main(String[] args) {
        System.out.println("héllo wörld ✓");
    }
}
"""
JS = """// 日本語のコメント
function add(a, b) {
  return a + b; // ünïcödé
}
module.exports = { add };
"""
LANGUAGES = (".py", ".java", ".js")
STDLIB_PACKAGES = ("json", "email", "collections", "importlib", "logging", "http")
SMALL_MODULES = ("colorsys", "bisect", "keyword", "this", "glob", "fnmatch", "stat", "token", "abc", "nturl2path",
                 "opcode", "sched")  # fmt: skip


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A few standard-library packages (~1 MB of Python), a Java and a JavaScript file, a non-UTF-8 file and
    a file of another language that the extension filter must skip."""
    root = tmp_path_factory.mktemp("corpus")
    for package in STDLIB_PACKAGES:
        shutil.copytree(default_source() / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "Hello.java").write_text(JAVA, encoding="utf-8")
    (root / "add.js").write_text(JS, encoding="utf-8")
    (root / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (root / "notes.md").write_text("# not code\n")
    return root


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """Twelve small standard-library modules: an epoch of about 50 steps of 16 x 32 tokens, so a run crosses
    epoch boundaries in seconds."""
    root = tmp_path_factory.mktemp("small_corpus")
    for name in SMALL_MODULES:
        shutil.copy(default_source() / f"{name}.py", root / f"{name}.py")
    return root


@pytest.fixture(scope="session")
def corpus_texts(corpus_dir) -> list[str]:
    from santacoder.data.corpus import Corpus

    return [d.text for d in Corpus(corpus_dir, LANGUAGES)]


@pytest.fixture(scope="session")
def tokenizer(corpus_texts) -> CodeTokenizer:
    return train_tokenizer(corpus_texts, vocab_size=512)


@pytest.fixture(scope="session")
def memorised():
    """A tiny model that knows four HumanEval problems by heart: the positive control of generation and eval."""
    import helpers_memorised

    return helpers_memorised.memorise()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One ``paths.data_dir`` for the session's training runs: the tokenizer and token store of each corpus and
    settings are built once, then found in the cache (its keys hold the corpus's and the tokenizer's fingerprints).
    A test that changes or inspects the cache itself gives its run a directory of its own."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture()
def compose_train(tmp_path, data_dir):
    """Compose configs/train.yaml with overrides, as `python train.py <overrides>` would, writing the run into
    ``tmp_path / "run"`` and its data cache into the session's ``data_dir``."""

    def _compose(*overrides: str) -> DictConfig:
        return run_overrides.compose_config("train", tmp_path / "run", data_dir, *overrides)

    yield _compose
    GlobalHydra.instance().clear()
