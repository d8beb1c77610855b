"""From code on disk to batches: corpus readers (``corpus``), memory-mapped token stores (``token_store``), packed
FIM samples and their sampler (``dataset``), and the LightningDataModule that builds and serves them
(``datamodule``); ``cache_files`` names the temporaries of a preparation so a killed one can be cleaned up."""
