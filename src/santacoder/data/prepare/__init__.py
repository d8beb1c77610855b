"""``prepare``: a corpus -> token shards, on datatrove (local or SLURM). Needs the ``data`` extra."""
