"""Packed FIM samples over a token store (or a split of prepared data), and the sampler that tells each sample its
epoch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from santacoder.data.languages import TokenLanguages, label_languages
from santacoder.data.shards import PreparedSplit
from santacoder.data.token_store import TokenStore
from santacoder.model.loss import IGNORE_INDEX
from santacoder.text.fim import fim_sample
from santacoder.text.tokenizer import CodeTokenizer


class PackedFIMDataset(Dataset):
    """Sample ``i`` is tokens ``[i * seq_len, (i + 1) * seq_len]`` of the store (``seq_len + 1`` ids, documents
    joined by ``<|endoftext|>``), FIM-transformed with randomness seeded by (seed, split, epoch, i). The store is
    anything with ``tokens[start:stop]`` and ``num_tokens``: an in-run token store or a split of prepared data,
    which lay their tokens out alike.

    Items are dicts of ``input_ids`` = sample[:-1] and ``labels`` = sample[1:], with ``<fim-pad>`` labels set to
    ``IGNORE_INDEX`` so padding is never trained on. Index with ``(epoch, i)`` or a plain ``i`` (epoch 0). With
    ``languages`` (validation of prepared data), items also hold ``language``: each label's language, an index
    into the names ``languages`` was read with.
    """

    def __init__(
        self,
        store: TokenStore | PreparedSplit,
        tokenizer: CodeTokenizer,
        seq_len: int,
        fim_rate: float,
        fim_spm_rate: float,
        seed: int,
        split: str = "train",
        languages: TokenLanguages | None = None,
    ):
        self.store = store
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.seed = seed
        self.split_id = 0 if split == "train" else 1
        self.languages = languages

    def __len__(self) -> int:
        return max(0, (self.store.num_tokens - 1) // self.seq_len)

    def raw_sample(self, index: int) -> np.ndarray:
        start = index * self.seq_len
        return np.array(self.store.tokens[start : start + self.seq_len + 1], dtype=np.int64)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        rng = np.random.default_rng([self.seed, self.split_id, epoch, index])
        raw = self.raw_sample(index)
        sample = fim_sample(raw, self.tokenizer, rng, self.fim_rate, self.fim_spm_rate)
        labels = sample[1:].copy()
        labels[labels == self.tokenizer.fim_pad_id] = IGNORE_INDEX
        item = {"input_ids": torch.from_numpy(sample[:-1].copy()), "labels": torch.from_numpy(labels)}
        if self.languages is not None:
            start = index * self.seq_len
            raw_languages = self.languages.of_tokens(start, start + len(raw))
            codes = label_languages(raw, sample, raw_languages, self.tokenizer.eod_id)
            item["language"] = torch.from_numpy(codes.astype(np.int64))
        return item


class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` (this rank's share, reshuffled each epoch by ``set_epoch``) that yields
    ``(epoch, index)`` so the dataset can seed each sample's FIM randomness by epoch as well.

    Being a DistributedSampler, Lightning keeps it as is instead of wrapping it for distributed runs.
    """

    def __init__(self, *args, pad: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not pad and not self.shuffle and not self.drop_last:
            # every rank takes every world-th sample and none is repeated to even the shares out, so a metric
            # summed over ranks counts each sample exactly once (validation: val/loss independent of the ranks)
            self.total_size = len(self.dataset)
            self.num_samples = len(range(self.rank, self.total_size, self.num_replicas))
        self.resume_epoch: int | None = None
        self.resume_skip = 0

    def resume_from(self, epoch: int, samples_seen: int) -> None:
        """In ``epoch``, skip this rank's first ``samples_seen`` samples: a run resumed mid-epoch continues with
        the samples an uninterrupted run would see next, instead of replaying the epoch from its start. Later
        epochs are whole."""
        self.resume_epoch, self.resume_skip = epoch, samples_seen
        self.set_epoch(epoch)  # a worker's first indices are drawn before Lightning calls set_epoch itself

    def __iter__(self):
        epoch = self.epoch
        skip = self.resume_skip if epoch == self.resume_epoch else 0
        for position, index in enumerate(super().__iter__()):
            if position >= skip:
                yield (epoch, index)

    # __len__ stays the whole epoch's, on purpose: Lightning reads it once and keeps it for every later epoch,
    # and counts the resumed epoch's batches from its restored batch counter.
