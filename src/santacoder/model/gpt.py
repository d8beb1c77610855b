"""GPT-2 with multi-query attention, as in SantaCoder (nanoGPT-style: the whole model in one file).

GPT -> Block -> CausalSelfAttention + MLP. Parameter names follow transformers' GPTBigCode
(``transformer.h.0.attn.c_attn.weight`` ...), so Hugging Face checkpoints map one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from santacoder.config import GPTConfig
from santacoder.model.attention import causal_attention, check_attn_impl, padded_causal_mask
from santacoder.model.kv_cache import KVCache
from santacoder.model.loss import check_loss_impl, linear_cross_entropy, token_cross_entropy


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, attn_impl: str = "auto"):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.multi_query = config.multi_query
        self.kv_dim = config.n_kv_head * config.head_dim
        # MQA: fused output rows are [all query heads | one key head | one value head] (GPTBigCode layout).
        # MHA: rows are grouped per head as (q, k, v), also as GPTBigCode lays them out.
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * self.kv_dim)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.attn_impl = attn_impl  # runtime choice, set by GPT.set_attn_impl; not a parameter or buffer

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x)  # (B, T, C + 2 * kv_dim)
        if self.multi_query:
            q, k, v = qkv.split((C, self.kv_dim, self.kv_dim), dim=2)
            q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
            k = k.unsqueeze(1)  # (B, 1, T, hs)
            v = v.unsqueeze(1)  # (B, 1, T, hs)
        else:
            qkv = qkv.view(B, T, self.n_head, 3 * self.head_dim).transpose(1, 2)  # (B, nh, T, 3 * hs)
            q, k, v = qkv.split(self.head_dim, dim=3)  # each (B, nh, T, hs)
        if cache is not None:  # decoding: store these positions, attend over every cached one
            k, v = cache.update(layer, k, v)  # (B, n_kv, T_past + T, hs)
        dropout = self.attn_pdrop if self.training else 0.0
        y = causal_attention(q, k, v, impl=self.attn_impl, dropout_p=dropout, mask=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.inner_dim)
        self.c_proj = nn.Linear(config.inner_dim, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh-approximated GELU: Megatron's fused bias-GELU and HF's gelu_pytorch_tanh compute this
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, attn_impl: str = "auto"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, attn_impl)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """The model of ``config``. How it runs here and now is not saved with the weights: ``attn_impl`` ("auto",
    "xformers", "sdpa", "math"; see santacoder.model.attention; change it with ``set_attn_impl``), and how
    ``forward(..., labels=)`` computes the loss: ``loss_impl`` ("auto", "chunked", "full"; see santacoder.model.loss)
    with ``loss_chunk_size`` tokens per chunk."""

    def __init__(
        self, config: GPTConfig, attn_impl: str = "auto", loss_impl: str = "auto", loss_chunk_size: int = 1024
    ):
        super().__init__()
        self.config = config
        check_attn_impl(attn_impl)
        check_loss_impl(loss_impl, loss_chunk_size)
        self.loss_impl = loss_impl
        self.loss_chunk_size = loss_chunk_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.n_positions, config.n_embd),
                drop=nn.Dropout(config.embd_pdrop),
                h=nn.ModuleList([Block(config, attn_impl) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in SantaCoder
        # recompute each block's activations during backward instead of storing them (training only)
        self.activation_checkpointing = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        # Output projections feed the residual stream once per layer and sub-block: Megatron's scaled init
        # keeps the residual's variance independent of depth.
        if isinstance(module, (CausalSelfAttention, MLP)):
            nn.init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))

    @property
    def attn_impl(self) -> str:
        return self.transformer.h[0].attn.attn_impl

    def set_attn_impl(self, attn_impl: str) -> GPT:
        """Run attention with another backend from now on (same weights, same results up to rounding)."""
        check_attn_impl(attn_impl)
        for block in self.transformer.h:
            block.attn.attn_impl = attn_impl
        return self

    def num_params(self) -> int:
        """Parameter count with the tied LM head counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        labels: torch.Tensor | None = None,
        per_token_loss: bool = False,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) for ``input_ids`` (B, T); with ``labels`` (B, T), the mean cross-entropy
        over the labelled positions instead (``IGNORE_INDEX`` = -100 marks the others; see santacoder.model.loss),
        or with ``per_token_loss`` each position's (B, T), 0 where unlabelled, without gradient (validation).

        ``cache``: the inputs continue the sequences held in it (its ``length`` positions), and their keys and
        values are stored in it. ``attention_mask`` (B, cached + T): 1 for tokens, 0 for padding (a left-padded
        batch of prompts): no query attends to padding, and a position counts only the tokens before it (unless
        ``position_ids`` (B, T) are given), so each row computes what it would alone. ``last_only``: the
        logits of the last position only (B, 1, vocab_size), all that decoding needs from the largest matmul.

        The loss is computed here, not by the caller, so that under FSDP the LM head's weight is still gathered
        when the loss reads it, and so that the chunked loss never materialises the logits.
        """
        B, T = input_ids.shape
        past = 0 if cache is None else cache.length
        if past + T > self.config.n_positions:
            raise ValueError(
                f"sequence of {past + T} tokens is longer than the model's n_positions={self.config.n_positions}"
            )
        mask = None
        if attention_mask is not None:
            attention_mask = attention_mask[:, : past + T]
            mask = padded_causal_mask(attention_mask, T)  # (B, 1, T, past + T)
            if position_ids is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device)[None]  # (1, T)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(position_ids)  # (B, T, C)
        x = self.transformer.drop(x)
        checkpointing = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.transformer.h):
            if checkpointing:
                x = torch.utils.checkpoint.checkpoint(block, x, cache, i, mask, use_reentrant=False)
            else:
                x = block(x, cache, i, mask)
        if cache is not None:
            cache.advance(T)
        if labels is not None:
            hidden = self.transformer.ln_f(x)  # (B, T, C)
            if per_token_loss:
                return token_cross_entropy(hidden, self.lm_head.weight, labels, chunk_size=self.loss_chunk_size)
            return linear_cross_entropy(
                hidden, self.lm_head.weight, labels, impl=self.loss_impl, chunk_size=self.loss_chunk_size
            )  # () fp32
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.transformer.ln_f(x))  # (B, T or 1, vocab_size)
