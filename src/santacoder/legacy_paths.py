"""Module paths from before the package was arranged in layers (commit 7c63784 and earlier), still importable.

A run directory keeps its Hydra config (``.hydra/config.yaml``), whose ``_target_`` values name the classes of the
code that wrote it (``santacoder.lit_module.SantaCoderLitModule``); a checkpoint keeps its scheduler's
(``santacoder.lit_module.warmup_cosine_schedule``); scripts import ``santacoder.tokenizer``. Importing an old path
gives a module that looks each name up, in order, in the modules that hold it now, with a DeprecationWarning
naming the new place. Installed by ``santacoder/__init__.py``, after the ordinary finders: a path that exists now
is never shadowed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED: dict[str, tuple[str, ...]] = {
    "santacoder.attention": ("santacoder.model.attention",),
    "santacoder.loss": ("santacoder.model.loss",),
    "santacoder.kv_cache": ("santacoder.model.kv_cache",),
    "santacoder.tokenizer": ("santacoder.text.tokenizer", "santacoder.checkpoints.loading"),
    "santacoder.fim": ("santacoder.text.fim",),
    "santacoder.generation": ("santacoder.inference.generation",),
    "santacoder.completion": ("santacoder.inference.completion",),
    "santacoder.demo": ("santacoder.inference.demo",),
    "santacoder.checkpoint": (
        "santacoder.checkpoints.format",
        "santacoder.checkpoints.storage",
        "santacoder.checkpoints.layouts.project",
    ),
    "santacoder.checkpoint_io": (
        "santacoder.training.checkpoint_io",
        "santacoder.checkpoints.storage",
        "santacoder.checkpoints.discovery",
    ),
    "santacoder.run_checkpoint": ("santacoder.training.callbacks.run_checkpoint",),
    "santacoder.interop": ("santacoder.checkpoints.loading", "santacoder.checkpoints.safe_load"),
    "santacoder.interop.loading": ("santacoder.checkpoints.loading", "santacoder.checkpoints.layouts.base"),
    "santacoder.interop.hf": ("santacoder.checkpoints.layouts.hf",),
    "santacoder.interop.megatron": ("santacoder.checkpoints.layouts.megatron",),
    "santacoder.interop.safe_unpickle": ("santacoder.checkpoints.safe_load",),
    "santacoder.lit_module": ("santacoder.training.module",),
    "santacoder.callbacks": ("santacoder.training.callbacks",),
    "santacoder.throughput": ("santacoder.training.callbacks.throughput", "santacoder.training.flops"),
    "santacoder.interrupts": ("santacoder.training.signals", "santacoder.training.callbacks.stop_on_signal"),
    "santacoder.strategies": ("santacoder.training.strategies",),
    "santacoder.train": ("santacoder.training.task", "santacoder.training.preflight", "santacoder.conf.instantiate"),
    "santacoder.launch": ("santacoder.conf.run_ids",),
    "santacoder.hydra_setup": ("santacoder.conf.resolvers",),
    "santacoder.configs": ("santacoder.conf.compose",),
    "santacoder.evaluation.evaluate": ("santacoder.evaluation.task",),
}
PACKAGES = {"santacoder.interop"}  # old packages: their old submodules are importable too


def lookup(old: str, name: str):
    """``name`` from the first module of ``MOVED[old]`` that has it."""
    for new in MOVED[old]:
        module = importlib.import_module(new)
        if hasattr(module, name):
            warnings.warn(f"{old}.{name} is now {new}.{name}", DeprecationWarning, stacklevel=3)
            return getattr(module, name)
    raise AttributeError(f"module {old!r} (now {', '.join(MOVED[old])}) has no attribute {name!r}")


class OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=fullname in PACKAGES)

    def create_module(self, spec):
        module = types.ModuleType(spec.name, f"Moved to {', '.join(MOVED[spec.name])} (see santacoder.legacy_paths).")
        module.__getattr__ = lambda name: lookup(spec.name, name)  # PEP 562: names resolved on first use
        return module

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(finder, OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(OldPathFinder())
