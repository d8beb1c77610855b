"""From code on disk to batches: corpus readers (``corpus``), memory-mapped token stores (``token_store``), the
prepared shards that a ``prepare`` pipeline writes (``shards``; the pipeline itself is ``prepare``), packed FIM
samples and their sampler (``dataset``), weighted mixtures of prepared sources (``mixture``), and the
LightningDataModules that build and serve them (``datamodule``; ``prepared_datamodule`` for prepared data);
``checksums`` hashes what their meta.json files vouch for, and ``cache_files`` names the temporaries of a preparation
so a killed one can be cleaned up."""
