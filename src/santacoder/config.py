"""What a model *is*: ``GPTConfig`` (the shape and regularisation saved with every checkpoint) and the named
presets. No ``nn.Module`` and no torch here: the config is read by layers that never build a model (Hydra's
config store, checkpoint inspection, data preparation)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from santacoder.errors import ConfigError

# The fields that decide the parameters' shapes (the rest, e.g. dropout, may change between runs of one model).
SHAPE_FIELDS = (
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "multi_query",
    "layer_norm_epsilon",
)


@dataclass
class GPTConfig:
    """What the model *is*: its shape and regularisation, saved with every checkpoint. Field names are those of
    transformers' ``GPTBigCodeConfig``, and so are the defaults of the optional fields; the shape has no default
    (named shapes are in ``PRESETS``). How the model runs (attention backend, device, dtype) is not part of it:
    see ``GPT(config, attn_impl=...)``."""

    vocab_size: int  # embedding rows (>= the tokenizer's size; SantaCoder pads 49157 tokens to 49280)
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    multi_query: bool = True  # True: one K/V head shared by all query heads (MQA)
    layer_norm_epsilon: float = 1e-5
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    initializer_range: float = 0.02  # std of the normal init (SantaCoder trained with 0.022: see PRESETS)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"GPTConfig.{name}={value!r} must be a positive integer")
        if self.n_inner is not None and (not isinstance(self.n_inner, int) or self.n_inner <= 0):
            raise ConfigError(f"GPTConfig.n_inner={self.n_inner!r} must be a positive integer or None (4 * n_embd)")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"GPTConfig.n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                "(head size = n_embd / n_head)"
            )
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"GPTConfig.{name}={value!r} must be in [0, 1)")
        if self.layer_norm_epsilon <= 0 or self.initializer_range <= 0:
            raise ConfigError("GPTConfig.layer_norm_epsilon and initializer_range must be positive")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_kv_head(self) -> int:
        return 1 if self.multi_query else self.n_head

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @classmethod
    def from_name(cls, name: str, **overrides) -> GPTConfig:
        """A named preset (see ``PRESETS``), with any field overridden by keyword."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, fields: dict, source: str = "model config") -> GPTConfig:
        """A GPTConfig from a stored dict (a checkpoint's). Runtime choices that older checkpoints stored with
        the shape (``attn_impl``) are dropped; any other unknown field is an error naming ``source``."""
        fields = {k: v for k, v in fields.items() if k not in RUNTIME_FIELDS}
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{source} has fields GPTConfig does not know: {unknown}")
        try:
            return cls(**fields)
        except TypeError as e:  # a required shape field is missing
            raise ConfigError(f"{source} is incomplete: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Fields that checkpoints written before the format had a version stored in the model config, although they
# say how a model runs, not what it is; GPTConfig.from_dict ignores them.
RUNTIME_FIELDS = ("attn_impl",)

# The one place named shapes live. Hydra's configs/model/*.yaml take their `config` node from here (registered
# by santacoder.hydra_setup), so a preset is never written twice.
PRESETS: dict[str, dict] = {
    # bigcode/santacoder: 24 x 2048, 16 query heads of 128, one shared K/V head, 8192-wide MLP,
    # 49152 BPE tokens + 5 specials padded to 49280, dropout 0.1, Megatron's --init-method-std 0.022;
    # 1,124,886,528 parameters with the tied LM head.
    "santacoder-1b": dict(
        vocab_size=49280, n_positions=2048, n_embd=2048, n_layer=24, n_head=16, n_inner=8192, initializer_range=0.022
    ),
    # CPU friendly: trains in minutes on two cores (see README).
    "tiny": dict(
        vocab_size=4096,
        n_positions=256,
        n_embd=128,
        n_layer=4,
        n_head=4,
        n_inner=512,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        initializer_range=0.022,
    ),
}
