"""Training from prepared data (``data=prepared data.path=<dir>``): the shards a ``prepare`` pipeline wrote
(``santacoder.data.shards``), read lazily through memory maps, instead of a corpus tokenized at the start of the run;
or from a weighted mixture of several prepared directories (``data.sources=[{path: <dir>, weight: <w>}, ...]``,
``santacoder.data.mixture``).

The corpus, its split and the tokenizer are the prepared directories'; batches, FIM, samplers, resume and its
checks are ``CodeDataModule``'s, unchanged: the same documents in the same order give the same samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from torch.utils.data import Dataset

from santacoder.data.datamodule import CodeDataModule, plain
from santacoder.data.dataset import PackedFIMDataset
from santacoder.data.languages import TokenLanguages
from santacoder.data.mixture import MixtureDataset, MixtureSource, plan_mixture
from santacoder.data.shards import SHARD_FILES, PreparedSplit, read_manifest, shard_problem
from santacoder.data.token_store import SPLITS
from santacoder.durable import write_bytes_atomically
from santacoder.errors import ConfigError

log = logging.getLogger(__name__)

# Settings of data=code that the prepared directory decides; configs/data/prepared.yaml sets them to null.
DECIDED_BY_PREPARE = ("source", "tokenizer", "vocab_size", "extensions", "max_doc_bytes", "val_fraction")


class PreparedDataModule(CodeDataModule):
    """``path`` is the prepared directory, or ``sources`` a mixture of them (``[{path, weight, name}]``, see
    ``santacoder.data.mixture``; ``max_repeat`` bounds how often a weight may draw a source's samples per mixture
    epoch); every other argument is ``CodeDataModule``'s (configs/data/prepared.yaml takes their defaults from
    configs/data/code.yaml), those of ``DECIDED_BY_PREPARE`` null."""

    def __init__(
        self,
        *,
        path: str | None,
        # None only for what the saved config of a run from before mixtures lacks (eval.py rebuilds its data
        # module from it): configs/data/prepared.yaml sets both
        sources: list[dict] | None = None,
        max_repeat: float | None = None,
        verify_shards: str = "always",  # a run saved before the setting verified at every start
        **settings,
    ):
        # Lightning records this frame's arguments too, as hyper-parameters: plain containers, as the base's
        sources, settings = plain(sources), plain(settings)
        # read by validate(), which the base class calls
        self.path = Path(path).expanduser() if path else None
        self.sources_setting, self.max_repeat = sources, max_repeat
        if verify_shards not in ("once", "always"):
            raise ConfigError(f"data.verify_shards={verify_shards!r} must be once or always")
        self.verify_shards = verify_shards
        self._val_languages: list[str] | None = None
        self.manifest: dict = {}
        self.mixture: list[MixtureSource] = []  # data.sources, checked: empty without a mixture
        super().__init__(**settings)

    def _validate_source(self, check) -> None:
        if self.sources_setting is None:
            check(
                self.path is not None,
                "data.path is not set: give the directory that prepare wrote (data.path=<dir>), or a mixture of "
                "several (data.sources=[{path: <dir>, weight: <number>}, ...])",
            )
        else:
            check(
                self.path is None,
                f"data.path={str(self.path)!r} and data.sources are both set: give one prepared directory "
                "(data.path) or a mixture (data.sources), and set the other to null",
            )
        # a mixture's manifests are read (and checked) first: the messages below name its sources
        self.mixture = plan_mixture(self.sources_setting, self.seq_len, self.max_repeat) if self.path is None else []
        for key in DECIDED_BY_PREPARE:
            check(
                self.hparams[key] is None,
                f"data.{key}={self.hparams[key]!r} cannot be set with data=prepared: {self._source_setting()} "
                f"brings its own corpus, split and tokenizer; leave data.{key} out (or use data=code)",
            )
        if not self.mixture:
            self.manifest = read_manifest(self.path)  # missing or unfinished: stop before any work
        for s in self.mixture:
            if s.draws == 0:  # a weight > 0 rounded to no sample
                log.warning("data.sources: %r (weight %s) draws no sample in a mixture epoch", s.name, s.weight)

    # -- what the base class derives from its corpus ----------------------------------------------------------

    def _directories(self) -> list[tuple[Path, dict]]:
        """The prepared directories trained on, with their manifests: data.path, or each source of the mixture."""
        if self.mixture:
            return [(source.path, source.manifest) for source in self.mixture]
        return [(self.path, self.manifest)]

    def trained_token_dirs(self) -> list[tuple[Path, list[dict] | None]]:
        """Every train shard of every prepared directory trained on (their docs.jsonl hold the metadata)."""
        return [(directory / shard, None) for directory, manifest in self._directories()
                for shard in manifest["splits"]["train"]["shards"]]  # fmt: skip

    def _tokenizer_file(self) -> Path:
        return self._directories()[0][0] / "tokenizer.json"  # a mixture's sources share one (plan_mixture)

    def tokenizer_size(self) -> int:
        return len(self._load_tokenizer())

    def _source_setting(self) -> str:
        if self.mixture:
            sources = ", ".join(f"{s.name}: {str(s.path)!r} weight {s.weight:g}" for s in self.mixture)
            return f"data.sources=[{sources}]"
        return f"data.path={str(self.path)!r}"

    def _data_fingerprint(self) -> tuple[str, str]:
        if not self.mixture:
            return str(self.path.resolve()), self.manifest["fingerprint"]
        # What decides the samples: each source's data and how many of its samples a mixture epoch draws (weights
        # in the same proportions draw the same). Where a source lies, as for data.path, is said but not compared.
        drawn = [[s.manifest["fingerprint"], s.draws] for s in self.mixture]
        fingerprint = "mixture-" + hashlib.sha256(json.dumps(drawn).encode()).hexdigest()[:16]
        return self._source_setting(), fingerprint

    @property
    def data_changes(self) -> str:
        if self.mixture:
            return "sources added, removed, reordered or prepared again, or weights that draw other numbers of samples"
        return "another prepared directory, or this one prepared again"

    # -- reading the shards -----------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Check every shard against its checksums, reading all of them (global rank 0 only, once per job): nothing
        to build, but a shard damaged on disk must stop the run before it trains on it. With
        ``verify_shards=once``, a directory whose shards were read whole before, and whose files kept their sizes
        and modification times since, is checked by its metadata only (a stamp in ``data.cache_dir``)."""
        if not self.mixture:
            self.manifest = read_manifest(self.path)
        tokenizer = self._load_tokenizer()
        directory, manifest = self._directories()[0]
        if manifest["tokenizer"] != tokenizer.fingerprint():
            where = f"data.sources[0] ({str(directory)!r})" if self.mixture else f"data.path={str(directory)!r}"
            raise ConfigError(
                f"{where} has a tokenizer.json ({tokenizer.fingerprint()}) other than the one its shards were made "
                f"with ({manifest['tokenizer']}); prepare the data again"
            )
        for directory, manifest in self._directories():
            stamp = self.cache_dir / f"verified-{manifest['fingerprint']}.json"
            files = _shard_files(directory, manifest)
            whole = self.verify_shards == "always" or not _stamp_holds(stamp, files)
            for split in SPLITS:
                shards = manifest["splits"][split]["shards"]
                what = "checking" if whole else "checking the metadata of (read whole before, unchanged since)"
                log.info("%s the %d %s shards of %s", what, len(shards), split, directory)
                for shard in shards:
                    problem = shard_problem(directory / shard, tokenizer, check_contents=whole)
                    if problem:
                        raise ConfigError(
                            f"shard {str(directory / shard)!r} is incomplete or damaged ({problem}); prepare the "
                            "data again"
                        )
            if whole and self.verify_shards == "once":
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                write_bytes_atomically(stamp, json.dumps(files, indent=1, sort_keys=True).encode())

    @property
    def val_languages(self) -> list[str]:
        """The languages of the validation documents, every source's (each shard's meta.json counts them):
        validation batches say each label's language as an index into this list, and training logs
        ``val/loss/<language>``."""
        if self._val_languages is None:  # read once: setup, the module and eval.py all ask
            names = set()
            for directory, manifest in self._directories():
                for shard in manifest["splits"]["val"]["shards"]:
                    meta = json.loads((directory / shard / "meta.json").read_text())
                    names.update(lang for lang, counts in meta.get("languages", {}).items() if counts.get("tokens"))
            self._val_languages = sorted(names)
        return self._val_languages

    def _packed(self, store: PreparedSplit, split: str, source: int = 0) -> PackedFIMDataset:
        dataset = super()._packed(store, split, source)
        if split == "val":
            dataset.languages = TokenLanguages.of_split(store, self.val_languages)
        return dataset

    def _open_split(self, split: str) -> PreparedSplit:
        # every rank: the manifest and each shard's metadata and file size (PreparedSplit checks them), no tokens
        return PreparedSplit(self.path, split, self.manifest)

    def _dataset(self, split: str) -> Dataset:
        if not self.mixture:
            return super()._dataset(split)
        # training: sources after the first get their own FIM randomness (sample p of two sources must not share
        # its FIM draws); validation: each source's split exactly as it is alone
        parts = [
            self._packed(PreparedSplit(s.path, split, s.manifest), split, i if split == "train" else 0)
            for i, s in enumerate(self.mixture)
        ]
        # training draws each source as weighted; validation is every source's split whole, once (unweighted)
        draws = [s.draws for s in self.mixture] if split == "train" else None
        dataset = MixtureDataset(parts, draws, self.seed, names=[s.name for s in self.mixture])
        if len(dataset) == 0:  # train: plan_mixture refused a source without a sample
            raise ConfigError(
                f"the {split} splits of {self._source_setting()} hold too few tokens for one sample of "
                f"data.seq_len={self.seq_len} + 1: use a shorter seq_len, or prepare a source with a validation split"
            )
        return dataset


def _shard_files(directory: Path, manifest: dict) -> dict[str, list[int]]:
    """[size, modification time in ns] of every file of every shard: what a stamp of a verified directory holds."""
    files = {}
    for split in SPLITS:
        for shard in manifest["splits"][split]["shards"]:
            for name in ("meta.json", *SHARD_FILES):
                path = directory / shard / name
                try:
                    st = path.stat()
                except OSError:
                    continue  # shard_problem names it
                files[str(path)] = [st.st_size, st.st_mtime_ns]
    return files


def _stamp_holds(stamp: Path, files: dict[str, list[int]]) -> bool:
    try:
        return json.loads(stamp.read_text()) == files
    except (OSError, ValueError):
        return False


def adopt_data_state(checkpoint: dict, datamodule: object) -> None:
    """Lightning keeps a data module's state (the position in the data, and what the data was) under the name of
    the data module's class: a run resumed with ``data=prepared`` from a checkpoint of ``data=code``, or the other
    way round, would find none, and start its epoch over on other data without a word. Give ``datamodule`` the
    state of the checkpoint's data module, so that its checks refuse other data (or resume, when asked to)."""
    mine = type(datamodule).__qualname__
    for other in (cls.__qualname__ for cls in (CodeDataModule, PreparedDataModule)):
        if mine not in checkpoint and other in checkpoint:
            checkpoint[mine] = checkpoint[other]
