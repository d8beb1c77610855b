"""A preallocated key/value cache for decoding (litgpt's ``KVCache`` is the model).

Each layer has a key and a value buffer of ``(B, n_kv_head, max_len, head_dim)``: one key/value head under
multi-query attention, so SantaCoder's cache is ``n_head`` (16) times smaller than a multi-head model's. A
forward pass writes its positions at ``length`` and attends over ``[0, length + T)``; nothing is concatenated
or reallocated while decoding.
"""

from __future__ import annotations

import torch

from santacoder.config import GPTConfig


class KVCache:
    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        if max_len > config.n_positions:
            raise ValueError(f"a cache of {max_len} positions is longer than n_positions={config.n_positions}")
        shape = (batch_size, config.n_kv_head, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len
        self.length = 0  # positions filled; advanced by GPT.forward once every layer has written

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this call's ``k``, ``v`` (B, n_kv, T, hs) of ``layer``; return every position's so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; {end} were asked for")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def repeat_interleave(self, n: int) -> None:
        """Each sequence's keys and values ``n`` times (row ``i`` becomes rows ``i * n ... i * n + n - 1``): ``n``
        samples continue one prefilled prompt."""
        self.keys = [k.repeat_interleave(n, dim=0) for k in self.keys]
        self.values = [v.repeat_interleave(n, dim=0) for v in self.values]

    def advance(self, n: int) -> None:
        self.length += n

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (the allocated tensors, not a formula)."""
        return sum(t.untyped_storage().nbytes() for t in (*self.keys, *self.values))

    @staticmethod
    def bytes_per_token(config: GPTConfig, dtype: torch.dtype = torch.float16) -> int:
        """2 (key and value) x n_layer x n_kv_head x head_dim x the dtype's size: what each cached position
        costs per sequence."""
        return 2 * config.n_layer * config.n_kv_head * config.head_dim * torch.empty((), dtype=dtype).element_size()
