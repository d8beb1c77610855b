"""Measuring code: each module benchmarks one thing against a reference measured in the same process and prints a
markdown table (``python -m santacoder.bench.<name>``); ``python -m santacoder.bench`` runs them all into
``bench/results.md`` (``make bench``). Notebooks and ``scripts/figures.py`` import the measuring functions."""
