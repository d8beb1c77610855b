"""Training from prepared data (``data=prepared data.path=<dir>``): the shards a ``prepare`` pipeline wrote
(``santacoder.data.shards``), read lazily through memory maps, instead of a corpus tokenized at the start of the run.

The corpus, its split and the tokenizer are the prepared directory's; batches, FIM, samplers, resume and its
checks are ``CodeDataModule``'s, unchanged: the same documents in the same order give the same samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

from santacoder.data.datamodule import CodeDataModule, plain
from santacoder.data.shards import PreparedSplit, read_manifest, shard_problem
from santacoder.data.token_store import SPLITS
from santacoder.errors import ConfigError

log = logging.getLogger(__name__)

# Settings of data=code that the prepared directory decides; configs/data/prepared.yaml sets them to null.
DECIDED_BY_PREPARE = ("source", "tokenizer", "vocab_size", "extensions", "max_doc_bytes", "val_fraction")


class PreparedDataModule(CodeDataModule):
    """``path`` is the prepared directory; every other argument is ``CodeDataModule``'s (configs/data/prepared.yaml
    takes their defaults from configs/data/code.yaml), those of ``DECIDED_BY_PREPARE`` null."""

    def __init__(self, *, path: str | None, **settings):
        self.path = Path(path).expanduser() if path else None  # read by validate(), which the base class calls
        self.manifest: dict = {}
        # Lightning records this frame's arguments too, as hyper-parameters: plain containers, as the base's
        settings = plain(settings)
        super().__init__(**settings)

    def _validate_source(self, check) -> None:
        check(self.path is not None, "data.path is not set: give the directory that prepare wrote (data.path=<dir>)")
        for key in DECIDED_BY_PREPARE:
            check(
                self.hparams[key] is None,
                f"data.{key}={self.hparams[key]!r} cannot be set with data=prepared: data.path={str(self.path)!r} "
                f"brings its own corpus, split and tokenizer; leave data.{key} out (or use data=code)",
            )
        self.manifest = read_manifest(self.path)  # missing or unfinished: stop before any work

    # -- what the base class derives from its corpus ----------------------------------------------------------

    def _tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    def tokenizer_size(self) -> int:
        return len(self._load_tokenizer())

    def _source_setting(self) -> str:
        return f"data.path={str(self.path)!r}"

    def _data_fingerprint(self) -> tuple[str, str]:
        return str(self.path.resolve()), self.manifest["fingerprint"]

    data_changes = "another prepared directory, or this one prepared again"

    # -- reading the shards -----------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Check every shard against its checksums, reading all of them once (global rank 0 only, once per job):
        nothing to build, but a shard damaged on disk must stop the run before it trains on it."""
        self.manifest = read_manifest(self.path)
        tokenizer = self._load_tokenizer()
        if self.manifest["tokenizer"] != tokenizer.fingerprint():
            raise ConfigError(
                f"data.path={str(self.path)!r} has a tokenizer.json ({tokenizer.fingerprint()}) other than the one "
                f"its shards were made with ({self.manifest['tokenizer']}); prepare the data again"
            )
        for split in SPLITS:
            shards = self.manifest["splits"][split]["shards"]
            log.info("checking the %d %s shards of %s", len(shards), split, self.path)
            for shard in shards:
                problem = shard_problem(self.path / shard, tokenizer, check_contents=True)
                if problem:
                    raise ConfigError(
                        f"shard {str(self.path / shard)!r} is incomplete or damaged ({problem}); prepare the data again"
                    )

    def _open_split(self, split: str) -> PreparedSplit:
        # every rank: the manifest and each shard's metadata and file size (PreparedSplit checks them), no tokens
        return PreparedSplit(self.path, split, self.manifest)


def adopt_data_state(checkpoint: dict, datamodule: object) -> None:
    """Lightning keeps a data module's state (the position in the data, and what the data was) under the name of
    the data module's class: a run resumed with ``data=prepared`` from a checkpoint of ``data=code``, or the other
    way round, would find none, and start its epoch over on other data without a word. Give ``datamodule`` the
    state of the checkpoint's data module, so that its checks refuse other data (or resume, when asked to)."""
    mine = type(datamodule).__qualname__
    for other in (cls.__qualname__ for cls in (CodeDataModule, PreparedDataModule)):
        if mine not in checkpoint and other in checkpoint:
            checkpoint[mine] = checkpoint[other]
