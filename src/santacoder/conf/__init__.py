"""Hydra glue: the resolvers and Python-defined config nodes (``resolvers``), run ids shared by every rank of a job
(``run_ids``), composing the configs from Python (``compose``), building config nodes into objects and reading a
run's command line (``instantiate``)."""

from santacoder.conf.compose import compose
from santacoder.conf.instantiate import build, command_line_overrides
from santacoder.conf.resolvers import setup_hydra

__all__ = ["build", "command_line_overrides", "compose", "setup_hydra"]
