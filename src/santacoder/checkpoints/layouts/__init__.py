"""One reader per checkpoint layout, each returning a ``base.Checkpoint``: ``project`` (this project's ``.ckpt``),
``hf`` (transformers GPTBigCode and the original bigcode/santacoder upload), ``megatron`` (Megatron-LM)."""
