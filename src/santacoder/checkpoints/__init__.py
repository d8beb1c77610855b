"""Checkpoints, from the bottom up: ``format`` (what a ``.ckpt`` of this project holds) -> ``safe_load`` and
``storage`` (atomic writes, loads that never run code) -> ``discovery`` (which file a run directory or
``ckpt_path`` stands for) -> ``layouts`` (this project's, Hugging Face's and Megatron-LM's, on one base) ->
``loading`` (``load``, ``load_tokenizer``, ``convert``, ``inspect_checkpoint``, ``save_hf``)."""
