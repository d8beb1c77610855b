"""Hydra overrides shared by the tests that train: the test corpus and a model small enough for seconds."""


def data(corpus_dir, seq_len: int, batch_size: int) -> list[str]:
    """The test corpus with a 512-token tokenizer, loaded in the main process."""
    return [
        f"data.source={corpus_dir}",
        "data.vocab_size=512",
        f"data.seq_len={seq_len}",
        f"data.batch_size={batch_size}",
        "data.num_workers=0",
        "data.val_fraction=0.1",
    ]


def model(n_layer: int, n_embd: int, n_head: int, n_inner: int, n_positions: int) -> list[str]:
    return [
        f"model.config.n_layer={n_layer}",
        f"model.config.n_embd={n_embd}",
        f"model.config.n_head={n_head}",
        f"model.config.n_inner={n_inner}",
        f"model.config.n_positions={n_positions}",
    ]
