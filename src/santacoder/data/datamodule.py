"""The LightningDataModule: corpus -> tokenizer -> memory-mapped token stores -> packed FIM batches.

``batch_size`` is the global batch in sequences; each rank loads
``batch_size / (world_size * accumulate_grad_batches)`` per step (the micro batch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from santacoder.data.cache_files import remove_stale_temporaries, temporary_prefix
from santacoder.data.corpus import Corpus, is_validation
from santacoder.data.dataset import EpochSampler, PackedFIMDataset
from santacoder.data.shards import PreparedSplit
from santacoder.data.token_store import SPLITS, TokenStore, build_token_stores, store_problem
from santacoder.durable import make_publishable
from santacoder.errors import ConfigError, is_disk_full, out_of_space
from santacoder.text.tokenizer import CodeTokenizer, FIMTokens, train_tokenizer

log = logging.getLogger(__name__)

FIM_TOKEN_STYLES = {"santacoder": FIMTokens(), "starcoder": FIMTokens.starcoder()}


# How long a data-loader worker keeps serving after a SIGTERM: time for the main process to finish its batch, save
# and shut the workers down itself, as it does on the same job-wide signal.
WORKER_SIGTERM_GRACE_S = 60.0


def ignore_stop_signals(worker_id: int, grace_s: float = WORKER_SIGTERM_GRACE_S) -> None:
    """``worker_init_fn`` of the data loaders. SLURM and a terminal signal the whole process group, but stopping is
    the main process's decision (``santacoder.training.signals``): it finishes the batch, saves, then shuts its
    workers down. A worker that died at once could fail the batch being fetched or the save, so SIGINT and SIGUSR1
    are ignored and SIGTERM only starts a countdown of ``grace_s`` seconds (SIGALRM, unused in workers), after
    which the worker exits: a stuck worker can still be stopped with ``kill``."""
    for sig in (signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)

    def exit_after_grace(signum: int, frame: object) -> None:
        # A second SIGTERM means whoever sends it wants the worker gone now.
        signal.signal(signal.SIGTERM, _exit_quietly)
        signal.signal(signal.SIGALRM, _exit_quietly)
        signal.setitimer(signal.ITIMER_REAL, max(grace_s, 0.001))  # 0 would disarm the timer, not fire it

    signal.signal(signal.SIGTERM, exit_after_grace)


def plain(value):
    """``value`` with plain lists and dicts for OmegaConf's containers (which Hydra passes): checkpoints store the
    data module's hyper-parameters, and load with ``weights_only``."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value


def _exit_quietly(signum: int, frame: object) -> None:
    # Status 0, not death by the signal: torch's main process raises on a worker that exits with a non-zero status
    # or by a signal (its SIGCHLD handler), which would turn a clean stop into a crash of the batch or the save.
    os._exit(0)


class CodeDataModule(L.LightningDataModule):
    """Every argument is required: ``configs/data/code.yaml`` is the one place their defaults and meanings are
    written (compose it, as ``train.py`` does, rather than constructing this class by hand).

    ``vocab_size`` is the size of the byte-level BPE to train when no ``tokenizer`` is given; the model's
    embedding rows are ``model.config.vocab_size``, at least the tokenizer's size (SantaCoder: 49,152 BPE
    tokens + 5 specials = 49,157 in the tokenizer, 49,280 rows in the embedding).
    """

    # The languages of validation labels (see PreparedDataModule): the in-run token store keeps none.
    val_languages: list[str] | None = None

    def __init__(
        self,
        *,
        source: str | None,
        extensions: list[str] | tuple[str, ...],
        max_doc_bytes: int,
        tokenizer: str | None,
        vocab_size: int,
        fim_tokens: str | dict,
        seq_len: int,
        batch_size: int,
        fim_rate: float,
        fim_spm_rate: float,
        val_fraction: float,
        num_workers: int,
        seed: int,
        cache_dir: str,
        pin_memory: bool,
    ):
        super().__init__()
        extensions, fim_tokens = plain(extensions), plain(fim_tokens)
        self.save_hyperparameters(logger=False)
        self.source = source
        self.extensions = tuple(extensions) if extensions is not None else None  # None: data=prepared's
        self.max_doc_bytes = max_doc_bytes
        self.tokenizer_path = tokenizer
        self.vocab_size = vocab_size
        self.fim_tokens_style = fim_tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.val_fraction = val_fraction
        self.num_workers = num_workers
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self.pin_memory = pin_memory
        self.tokenizer: CodeTokenizer | None = None
        self.datasets: dict[str, Dataset] = {}
        self._corpus: Corpus | None = None
        self._resume_position: tuple[int, int] | None = None  # (epoch, samples seen), from a checkpoint
        # Resume from a checkpoint written with another corpus or tokenizer (train.py sets it from the run's
        # `resume_with_other_data`; a runtime choice, not a hyper-parameter).
        self.resume_with_other_data = False
        # Only global rank 0 tokenizes (into a shared cache directory); every other rank waits, then reads. Per
        # node preparation could train different tokenizers on different nodes.
        self.prepare_data_per_node = False
        self.validate()

    # -- validation (runs at construction: bad values stop the run before any work) ---------------------

    def validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        check(0.0 <= self.fim_rate <= 1.0, f"data.fim_rate={self.fim_rate} must be between 0 and 1")
        check(0.0 <= self.fim_spm_rate <= 1.0, f"data.fim_spm_rate={self.fim_spm_rate} must be between 0 and 1")
        check(
            isinstance(self.seq_len, int) and self.seq_len > 0,
            f"data.seq_len={self.seq_len} must be a positive integer",
        )
        check(
            isinstance(self.batch_size, int) and self.batch_size > 0,
            f"data.batch_size={self.batch_size} must be a positive integer (global batch, in sequences)",
        )
        check(self.num_workers >= 0, f"data.num_workers={self.num_workers} must be >= 0")
        if isinstance(self.fim_tokens_style, str):
            check(
                self.fim_tokens_style in FIM_TOKEN_STYLES,
                f"data.fim_tokens={self.fim_tokens_style!r} must be one of {sorted(FIM_TOKEN_STYLES)} or a "
                "mapping of eod/prefix/middle/suffix/pad to token names",
            )
        else:
            names = dict(self.fim_tokens_style)
            unknown = set(names) - set(vars(FIMTokens()))
            check(not unknown, f"data.fim_tokens has unknown keys {sorted(unknown)}; use eod/prefix/middle/suffix/pad")
        self._validate_source(check)

    def _validate_source(self, check) -> None:
        """The settings of where the tokens come from: here a corpus, split and tokenized in the run."""
        check(0.0 < self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction} must be between 0 and 1")
        check(
            isinstance(self.max_doc_bytes, int) and self.max_doc_bytes > 0,
            f"data.max_doc_bytes={self.max_doc_bytes} must be a positive integer (bytes; The Stack used 1000000)",
        )
        if self.tokenizer_path is not None:
            check(
                Path(self.tokenizer_path).exists(),
                f"data.tokenizer={self.tokenizer_path!r} does not exist; give a tokenizer.json or null to train one",
            )
        else:
            check(self.vocab_size >= 261, f"data.vocab_size={self.vocab_size} must be at least 261 (bytes + specials)")
        self._corpus = Corpus(self.source, self.extensions, self.max_doc_bytes)  # raises if missing or empty

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = Corpus(self.source, self.extensions, self.max_doc_bytes)
        return self._corpus

    @property
    def fim_tokens(self) -> FIMTokens:
        if isinstance(self.fim_tokens_style, str):
            return FIM_TOKEN_STYLES[self.fim_tokens_style]
        return FIMTokens(**dict(self.fim_tokens_style))  # e.g. {prefix: <PRE>, ...}; unnamed ones keep defaults

    def tokenizer_size(self) -> int:
        """The tokenizer's number of tokens, known before any data work: the given tokenizer's, or the size of
        the BPE to train (a trained BPE has exactly ``vocab_size`` tokens, its specials included)."""
        if self.tokenizer_path is not None:
            return len(self._load_tokenizer())
        return self.vocab_size

    def micro_batch_size(self, world_size: int, accumulate_grad_batches: int = 1) -> int:
        per_step = world_size * accumulate_grad_batches
        if self.batch_size % per_step:
            raise ConfigError(
                f"data.batch_size={self.batch_size} (global, sequences) must be divisible by devices x nodes x "
                f"accumulate_grad_batches = {world_size} x {accumulate_grad_batches} = {per_step}"
            )
        return self.batch_size // per_step

    # -- cached artefacts ---------------------------------------------------------------------------

    def _tokenizer_file(self) -> Path:
        if self.tokenizer_path is not None:
            return Path(self.tokenizer_path)
        style = self.fim_tokens_style
        if not isinstance(style, str):  # custom names: a short hash keeps odd characters out of the file name
            style = "custom" + hashlib.sha1(json.dumps(style, sort_keys=True).encode()).hexdigest()[:8]
        key = f"{self.corpus.fingerprint()}-v{self.vocab_size}-{style}-val{self.val_fraction}"
        return self.cache_dir / f"tokenizer-{key}.json"

    def _store_dir(self, tokenizer: CodeTokenizer) -> Path:
        return self.cache_dir / f"tokens-{self.corpus.fingerprint()}-{tokenizer.fingerprint()}-val{self.val_fraction}"

    def tokenizer_file(self) -> Path:
        """The tokenizer.json of the data's ids (given, cached from training, or the prepared directory's)."""
        return self._tokenizer_file()

    def trained_token_dirs(self) -> list[tuple[Path, list[dict] | None]]:
        """The token stores training reads its samples from (the train split), each with its documents' metadata in
        store order when the store keeps none itself (the in-run store: re-read from the corpus, whose fingerprint
        names the store), for the attribution index (``santacoder index``)."""
        tokenizer = self._load_tokenizer()
        store = self._store_dir(tokenizer) / "train"
        documents = [
            {"id": doc.name, **{k: doc.meta.get(k) for k in ("path", "repo", "license", "language")}}
            for doc in self.corpus
            if not is_validation(doc.name, self.val_fraction)
        ]
        return [(store, documents)]

    def _load_tokenizer(self) -> CodeTokenizer:
        """The tokenizer file, read once per process (the vocabulary check, prepare_data and setup share it)."""
        if self.tokenizer is None:
            self.tokenizer = CodeTokenizer.from_file(self._tokenizer_file(), self.fim_tokens)
        return self.tokenizer

    def prepare_data(self) -> None:
        """Train the tokenizer and tokenize the corpus, unless cached (runs on global rank 0 only)."""
        remove_stale_temporaries(self.cache_dir)  # what a killed preparation left (a running one's stay)
        tok_file = self._tokenizer_file()
        if not tok_file.exists():
            log.info("training a %d-token BPE tokenizer on %s", self.vocab_size, self.corpus.source)
            docs = (d.text for d in self.corpus if not is_validation(d.name, self.val_fraction))
            tokenizer = train_tokenizer(docs, self.vocab_size, self.fim_tokens)
            self._save_tokenizer(tokenizer, tok_file)
        tokenizer = self._load_tokenizer()
        store_dir = self._store_dir(tokenizer)
        if store_dir.exists():
            problems = {s: store_problem(store_dir / s, tokenizer) for s in SPLITS}
            problems = {s: p for s, p in problems.items() if p}
            if not problems:
                return
            split, problem = next(iter(problems.items()))
            log.warning("token store %s is incomplete or damaged (%s: %s): rebuilding it", store_dir, split, problem)
            shutil.rmtree(store_dir)
        log.info("tokenizing %s into %s", self.corpus.source, store_dir)
        build_token_stores(self.corpus, tokenizer, store_dir, self.val_fraction)

    def _save_tokenizer(self, tokenizer: CodeTokenizer, tok_file: Path) -> None:
        tok_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(tok_file), dir=tok_file.parent)
        os.close(fd)
        make_publishable(tmp)
        try:
            tokenizer.save(tmp)
            os.replace(tmp, tok_file)  # atomic: a reader never sees half a file
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if is_disk_full(e):
                raise out_of_space(
                    e, "the tokenizer", tok_file.parent, "free space there or set data.cache_dir to a larger disk"
                ) from e
            raise
        log.info("saved tokenizer to %s", tok_file)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._load_tokenizer()
        for split in SPLITS:
            self.datasets[split] = self._dataset(split)
        log.info(
            "data: %d train / %d val samples of %d tokens; tokenizer %s (%d tokens)",
            len(self.datasets["train"]),
            len(self.datasets["val"]),
            self.seq_len,
            self._tokenizer_file(),
            len(self.tokenizer),
        )

    def _dataset(self, split: str) -> Dataset:
        """The samples of ``split``, refused in one line when there is not one."""
        store = self._open_split(split)
        dataset = self._packed(store, split)
        if len(dataset) == 0:
            raise ConfigError(
                f"the {split} split of {self._source_setting()} has {store.num_tokens} tokens "
                f"({store.num_docs} documents), too few for one sample of data.seq_len={self.seq_len} + 1; "
                "use a larger corpus, a shorter seq_len"
                + (", or a larger data.val_fraction" if split == "val" and self.val_fraction else "")
            )
        return dataset

    def _packed(self, store: TokenStore | PreparedSplit, split: str, source: int = 0) -> PackedFIMDataset:
        # a mixture's sources after the first get their own FIM randomness: sample p of two sources must not
        # share its FIM draws (source 0 keeps the seed, so one source is exactly data.path's samples)
        seed = self.seed + 1_000_003 * source
        return PackedFIMDataset(store, self.tokenizer, self.seq_len, self.fim_rate, self.fim_spm_rate, seed, split)

    def _open_split(self, split: str) -> TokenStore:
        store_dir = self._store_dir(self.tokenizer)
        # prepare_data (global rank 0) read it all against its checksums: every rank reads the metadata only
        problem = store_problem(store_dir / split, self.tokenizer, check_contents=False)
        if problem:  # it changed since, or ranks see other storage
            raise ConfigError(
                f"token store {store_dir / split} is incomplete or damaged ({problem}); run again to rebuild "
                f"it, and on a cluster put data.cache_dir={str(self.cache_dir)!r} on storage every node sees"
            )
        return TokenStore(store_dir / split)

    def _source_setting(self) -> str:
        """The setting that names the data, with its value, for messages."""
        return f"data.source={str(self.corpus.source)!r}"

    def _data_fingerprint(self) -> tuple[str, str]:
        """Where the data is and a fingerprint of its content, saved in checkpoints (``state_dict``)."""
        return str(self.corpus.source), self.corpus.fingerprint()

    # What changes the fingerprint, said when a checkpoint's differs from this run's.
    data_changes = "files were added, removed, changed or moved"

    # -- loaders ------------------------------------------------------------------------------------

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        micro = self.micro_batch_size(world, accumulate if split == "train" else 1)
        dataset = self.datasets[split]
        sampler = EpochSampler(
            dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed, drop_last=shuffle, pad=shuffle
        )
        if split == "train" and self._resume_position is not None:
            # Each rank's share of an epoch is every world-th sample of one global order, so skipping
            # samples_seen / world of its own share skips exactly the samples_seen the whole job had trained on,
            # whatever the number of ranks was when the checkpoint was written.
            epoch, samples_seen = self._resume_position
            sampler.resume_from(epoch, samples_seen // world)
            log.info("resuming epoch %d after %d of its samples", epoch, samples_seen)
        return DataLoader(
            dataset,
            batch_size=micro,
            sampler=sampler,
            # its own generator (for worker seeds): drawing from torch's global one would shift the dropout
            # masks of training steps by every loader created, differently in a resumed run
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=ignore_stop_signals,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    # -- position in the data, saved in every checkpoint ----------------------------------------------

    def state_dict(self) -> dict:
        """Where training is in the data: the epoch and how many of its samples the whole job has trained on.

        Counted from the batches this rank has processed: a checkpoint written at a batch's end includes that
        batch, unlike Lightning's own counter at that moment. Checkpoints are written only where an optimizer
        step ends (``RunCheckpoint``), so no partly accumulated gradient is ever counted as seen.
        """
        trainer = self.trainer
        if trainer is None:
            return {}
        processed = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        micro = self.micro_batch_size(trainer.world_size, trainer.accumulate_grad_batches)
        source, fingerprint = self._data_fingerprint()
        return {
            "epoch": trainer.current_epoch,
            "samples_seen": processed * micro * trainer.world_size,
            # what the position means: resuming with other data is refused unless asked for (load_state_dict)
            "source": source,
            "corpus": fingerprint,
            "tokenizer": self._load_tokenizer().fingerprint(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._check_same_data(state_dict)
        if "epoch" in state_dict:
            self._resume_position = (int(state_dict["epoch"]), int(state_dict["samples_seen"]))

    def _check_same_data(self, saved: dict) -> None:
        """A checkpoint trained with another tokenizer reads this run's ids as other text, and one trained on
        another corpus continues at a position that means other samples: both are refused unless the user says
        to go on (checkpoints written before these were saved are not checked)."""
        ckpt = getattr(self.trainer, "ckpt_path", None) if self.trainer is not None else None
        tokenizer, corpus = self._load_tokenizer().fingerprint(), self._data_fingerprint()[1]
        if "tokenizer" in saved and saved["tokenizer"] != tokenizer:
            what = f"another tokenizer ({saved['tokenizer']}; this run's is {tokenizer}, so its ids mean other text)"
        elif "corpus" in saved and saved["corpus"] != corpus:
            what = (
                f"another corpus ({saved['source']!r} with fingerprint {saved['corpus']}; this run's "
                f"{self._source_setting()} has {corpus}: {self.data_changes})"
            )
        else:
            return
        if self.resume_with_other_data:
            log.warning("ckpt_path=%s was trained with %s; going on as resume_with_other_data=true asks", ckpt, what)
            return
        raise ConfigError(
            f"ckpt_path={str(ckpt)!r} was trained with {what}. Resume with the data settings of the run that wrote "
            "it, set resume_with_other_data=true to go on with this data anyway, or start a new run from its "
            "weights with model.init_from"
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
