"""Mixtures of prepared sources (``data=prepared data.sources=[{path: <dir>, weight: <w>}, ...]``): how many samples
each source gives a mixture epoch, which of its samples each mixture sample is, and the checks made before any work.

A mixture epoch has N = sum of the sources' train samples L_s (at ``data.seq_len``); source s gets n_s draws of it,
N * w_s / sum(w) rounded (largest remainders first, so the n_s sum to N). Mixture sample k lies in its source's
block [start_s, start_s + n_s) (blocks in config order); in mixture epoch e it is the source's draw number
g = e * n_s + (k - start_s), so a source's draws run through its samples cycle after cycle, each cycle a
pseudo-random permutation of them: every sample is drawn once before any is drawn again, and what repeats is not a
contiguous stretch of the corpus. The global order, the rank split and resume stay the sampler's
(``EpochSampler`` over the mixture, one seeded permutation of its N samples per epoch), so the contract of
unmixed data holds unchanged. State is O(number of sources): no table of samples.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from santacoder.data.dataset import PackedFIMDataset
from santacoder.data.shards import read_manifest
from santacoder.errors import ConfigError

ENTRY_KEYS = ("path", "weight", "name")


@dataclass(frozen=True)
class MixtureSource:
    """One entry of ``data.sources``, checked: its prepared directory and manifest, its name in logs, its weight,
    its train samples L_s and its draws n_s per mixture epoch."""

    name: str
    path: Path
    weight: float
    manifest: dict
    samples: int
    draws: int


def plan_mixture(entries: object, seq_len: int, max_repeat: object) -> list[MixtureSource]:
    """``data.sources`` read (their manifests only: no shard is opened) and checked, or a ConfigError in one line:
    a malformed entry, a weight that is not a number > 0, two names alike, sources of different tokenizers, a source
    too small for one sample, or a weight that would draw a source more than ``max_repeat`` times per epoch."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"data.sources={entries!r} must be a non-empty list of {{path: <prepared dir>, weight: <number>}}"
        )
    if isinstance(max_repeat, bool) or not isinstance(max_repeat, int | float) or not max_repeat >= 1:
        raise ConfigError(
            f"data.max_repeat={max_repeat!r} must be a number >= 1 (how many times per mixture epoch a weight may "
            "draw each sample of a source)"
        )
    paths, weights, names, manifests = [], [], [], []
    for i, entry in enumerate(entries):
        where = f"data.sources[{i}]"
        if not isinstance(entry, dict) or not {"path", "weight"} <= entry.keys() or entry.keys() - set(ENTRY_KEYS):
            raise ConfigError(f"{where}={entry!r} must be a mapping of path, weight and optionally name")
        weight = entry["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not (0 < weight < math.inf):
            raise ConfigError(
                f"{where}.weight={weight!r} must be a number > 0 (the source's share of the mixture, relative to "
                "the other weights)"
            )
        path = Path(str(entry["path"])).expanduser()
        manifest = read_manifest(path)  # missing or unfinished: its own one line
        name = str(entry.get("name") or path.resolve().name)
        if name in names:
            raise ConfigError(
                f"{where} is named {name!r} like data.sources[{names.index(name)}]: give one of them another name "
                "(its `name` key), which its metrics are logged under"
            )
        if manifests and manifest["tokenizer"] != manifests[0]["tokenizer"]:
            raise ConfigError(
                f"{where} ({str(path)!r}) was prepared with tokenizer {manifest['tokenizer']}, data.sources[0] "
                f"({str(paths[0])!r}) with {manifests[0]['tokenizer']}: a mixture has one tokenizer; prepare "
                "every source with the same tokenizer.json"
            )
        paths.append(path)
        weights.append(weight)
        names.append(name)
        manifests.append(manifest)

    samples = []
    for i, manifest in enumerate(manifests):
        tokens = int(manifest["splits"]["train"]["num_tokens"])
        samples.append(max(0, (tokens - 1) // seq_len))  # PackedFIMDataset's length, known from the manifest
        if samples[-1] == 0:
            raise ConfigError(
                f"data.sources[{i}] ({str(paths[i])!r}) has {tokens} train tokens, too few for one sample of "
                f"data.seq_len={seq_len} + 1: leave it out or use a shorter seq_len"
            )
    draws = allocate_draws(samples, weights)
    for i, (n, size) in enumerate(zip(draws, samples, strict=True)):
        if n > max_repeat * size:
            raise ConfigError(
                f"data.sources[{i}] ({names[i]!r}, weight {weights[i]}) would be drawn {n} times per mixture epoch "
                f"from its {size} samples, {n / size:.2f} repeats, more than data.max_repeat={max_repeat}: lower "
                "its weight or raise data.max_repeat"
            )
    return [
        MixtureSource(name, path, float(weight), manifest, size, n)
        for name, path, weight, manifest, size, n in zip(names, paths, weights, manifests, samples, draws, strict=True)
    ]


def allocate_draws(samples: Sequence[int], weights: Sequence[float]) -> list[int]:
    """n_s: the N = sum(samples) draws of a mixture epoch shared in proportion to ``weights``, each share rounded
    down, then the draws this leaves given one each to the largest remainders (the earlier source on ties), so they
    sum to N. In exact arithmetic: weights in the sources' natural proportions give each source its own samples."""
    total = sum(samples)
    shares = [Fraction(w) for w in weights]  # the float's exact value: no rounding before the last step
    quotas = [total * share / sum(shares) for share in shares]
    draws = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda s: (-(quotas[s] - draws[s]), s))
    for s in by_remainder[: total - sum(draws)]:
        draws[s] += 1
    return draws


class MixtureDataset(Dataset):
    """Mixture sample ``k`` of mixture epoch ``e`` (index with ``(e, k)``, or ``k`` for epoch 0): sample p of
    source s's cycle c (module docstring), with that source's FIM randomness of epoch c and sample p. A source whose
    draws equal its samples is read in order, its cycle the mixture epoch: one source of weight 1, or weights in the
    sources' natural proportions, give the very samples of the unmixed data. Items are the sources' items with
    ``source``, the source's index, added (what ``MixtureMonitor`` counts).

    ``draws`` None: every source whole, once, in order (validation: the sources' splits concatenated)."""

    def __init__(
        self,
        datasets: Sequence[PackedFIMDataset],
        draws: Sequence[int] | None,
        seed: int,
        names: Sequence[str] | None = None,
    ):
        self.datasets = list(datasets)
        self.samples = [len(d) for d in self.datasets]
        self.draws = list(draws) if draws is not None else list(self.samples)
        self.seed = seed
        self.names = list(names) if names is not None else [str(s) for s in range(len(self.datasets))]
        self.starts = np.cumsum([0, *self.draws[:-1]]).tolist()
        self.seq_len = self.datasets[0].seq_len

    def __len__(self) -> int:
        return sum(self.draws)

    def locate(self, epoch: int, k: int) -> tuple[int, int, int]:
        """(source, cycle, sample) of mixture sample ``k`` in mixture epoch ``epoch``."""
        s = bisect_right(self.starts, k) - 1  # the last block starting at or before k: never an empty one
        n, size = self.draws[s], self.samples[s]
        c = k - self.starts[s]
        if n == size:
            return s, epoch, c
        cycle, p = divmod(epoch * n + c, size)
        return s, cycle, shuffled(p, size, (self.seed, s, cycle))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, k = key if isinstance(key, tuple) else (0, key)
        if not 0 <= k < len(self):
            raise IndexError(f"sample {k} out of range for {len(self)} samples")
        s, cycle, p = self.locate(epoch, k)
        item = self.datasets[s][(cycle, p)]
        item["source"] = torch.tensor(s)
        return item


def shuffled(position: int, size: int, key: Sequence[int]) -> int:
    """Where ``position`` goes in a pseudo-random permutation of ``range(size)`` chosen by ``key``, without a table:
    a four-round Feistel network (a bijection of the integers of an even number of bits, covering ``size``), applied
    again while the value falls outside ``range(size)`` (cycle walking: still a bijection, now of ``range(size)``;
    fewer than four rounds expected, as the bits cover less than 4 * size)."""
    bits = max(2, (size - 1).bit_length())
    bits += bits % 2
    half, mask = bits // 2, (1 << (bits // 2)) - 1
    round_keys = [int(k) for k in np.random.SeedSequence(list(key)).generate_state(4, dtype=np.uint64)]
    x = position
    while True:
        left, right = x >> half, x & mask
        for round_key in round_keys:
            left, right = right, left ^ (_mix64(right ^ round_key) & mask)
        x = (left << half) | right
        if x < size:
            return x


def _mix64(x: int) -> int:
    """A 64-bit integer hash (the splitmix64 finalizer's constants): each output bit depends on every input bit."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)
