"""Mixtures of prepared sources (data=prepared data.sources=[{path, weight}], santacoder.data.mixture): one source of
weight 1 is data.path's exact samples; weights are honoured per mixture epoch exactly and over the shuffled order
within tolerance; a repeated source's samples are all drawn before any is drawn again; bad weights are refused in
one line before any work; a resumed run across mixture epochs is bitwise the uninterrupted one, and counts tokens
per source where it stopped; ranks share each global batch; a resume with other weights is refused."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from helpers_prepared import documents, write_prepared
from santacoder import ConfigError
from santacoder.conf import build
from santacoder.data.corpus import Document, default_source
from santacoder.data.dataset import EpochSampler
from santacoder.data.mixture import MixtureDataset
from santacoder.text.tokenizer import train_tokenizer
from santacoder.training.task import train

ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN, BATCH = 32, 8


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """``a``: five small standard-library modules (real code, about three times ``b``'s samples; stat.py is chosen
    for validation by its name); ``b``: generated functions; ``big``: many more generated functions; ``other``: ``b``'s
    documents under another tokenizer."""
    root = tmp_path_factory.mktemp("sources")
    names = ("bisect", "keyword", "this", "token", "stat")
    modules = [Document(f"{m}.py", (default_source() / f"{m}.py").read_text()) for m in names]
    write_prepared(root / "a", [modules[:2], modules[2:]], tokenizer, val_fraction=0.3)
    write_prepared(root / "b", [documents(80)], tokenizer, val_fraction=0.3)
    write_prepared(root / "big", [documents(2000)], tokenizer, val_fraction=0.3)
    other = train_tokenizer([d.text for d in documents(80)], vocab_size=300)
    write_prepared(root / "other", [documents(80)], other, val_fraction=0.3)
    return {name: root / name for name in ("a", "b", "big", "other")}


def mixture(*entries: tuple) -> str:
    """``data.sources=[...]`` as on the command line, from (path, weight) or (path, weight, name) tuples."""
    items = [f"{{path:'{e[0]}',weight:{e[1]}" + (f",name:{e[2]}}}" if len(e) > 2 else "}") for e in entries]
    return f"data.sources=[{','.join(items)}]"


def datamodule(compose_train, *overrides: str):
    cfg = compose_train("data=prepared", f"data.seq_len={SEQ_LEN}", f"data.batch_size={BATCH}", "data.num_workers=0",
                        *overrides)  # fmt: skip
    dm = build(cfg, "data")
    dm.setup()
    return dm


def sample_hash(item: dict) -> str:
    return hashlib.sha1(item["input_ids"].numpy().tobytes()).hexdigest()  # as helpers_record.RecordBatches


def epoch_order(dataset, epoch: int, seed: int, world: int = 1, rank: int = 0) -> list[tuple[int, int]]:
    """The (epoch, index) pairs a rank's training sampler yields in ``epoch``: CodeDataModule's sampler."""
    sampler = EpochSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)


def drawn(mix: MixtureDataset, source: int, epochs: int) -> list[int]:
    """Source ``source``'s samples in the order of its draws (mixture epoch by mixture epoch, block by block)."""
    start, n = mix.starts[source], mix.draws[source]
    return [mix.locate(e, start + c)[2] for e in range(epochs) for c in range(n)]


# -- samples ----------------------------------------------------------------------------------------------------


def test_one_source_of_weight_one_is_data_path_sample_for_sample(sources, compose_train):
    """Every training sample of three mixture epochs (FIM included) and the validation split are data.path's."""
    plain = datamodule(compose_train, f"data.path={sources['a']}")
    mixed = datamodule(compose_train, mixture((sources["a"], 1)))
    train, reference = mixed.datasets["train"], plain.datasets["train"]
    assert isinstance(train, MixtureDataset) and len(train) == len(reference) > 50
    for epoch in range(3):
        for k in range(len(reference)):
            assert torch.equal(train[(epoch, k)]["input_ids"], reference[(epoch, k)]["input_ids"]), (epoch, k)
            assert torch.equal(train[(epoch, k)]["labels"], reference[(epoch, k)]["labels"])
    assert [sample_hash(mixed.datasets["val"][k]) for k in range(len(plain.datasets["val"]))] == [
        sample_hash(plain.datasets["val"][k]) for k in range(len(plain.datasets["val"]))
    ]


def test_validation_is_every_source_val_split_whole_and_unweighted(sources, compose_train):
    mixed = datamodule(compose_train, mixture((sources["a"], 1), (sources["b"], 3)))
    parts = [datamodule(compose_train, f"data.path={sources[s]}").datasets["val"] for s in ("a", "b")]
    val = mixed.datasets["val"]
    assert len(val) == len(parts[0]) + len(parts[1]) and min(map(len, parts)) > 0
    expected = [sample_hash(part[k]) for part in parts for k in range(len(part))]
    assert [sample_hash(val[k]) for k in range(len(val))] == expected
    assert [int(val[k]["source"]) for k in range(len(val))] == [0] * len(parts[0]) + [1] * len(parts[1])


def test_weights_are_drawn_exactly_per_mixture_epoch_and_within_tolerance_in_order(sources, compose_train):
    """Weights 1:3 against natural proportions of about 3.4:1: each mixture epoch draws 1/4 and 3/4 of its samples
    from them exactly, and the first half of the shuffled epoch within a binomial tolerance of that."""
    dm = datamodule(compose_train, mixture((sources["a"], 1), (sources["b"], 3)))
    mix = dm.datasets["train"]
    total = sum(mix.samples)
    assert len(mix) == total and mix.samples[0] > 2 * mix.samples[1]  # natural shares: b well under 1/3
    assert mix.draws == [round(total / 4), total - round(total / 4)]
    for epoch in range(3):
        counts = np.bincount([mix.locate(epoch, k)[0] for k in range(len(mix))], minlength=2)
        assert counts.tolist() == mix.draws
    order = epoch_order(mix, 0, dm.seed)
    prefix = order[: len(order) // 2]
    from_b = sum(int(mix[key]["source"]) == 1 for key in prefix)  # what each batch says its samples' sources are
    expected, sd = len(prefix) * 0.75, (len(prefix) * 0.75 * 0.25) ** 0.5
    assert abs(from_b - expected) <= 4 * sd, (from_b, expected)


def test_a_repeated_source_draws_every_sample_before_any_again(sources, compose_train):
    """b drawn about 3.3 times per mixture epoch: its draws, in draw order, run through whole shuffled cycles (each
    a permutation of its samples, none the identity, no two alike); after each mixture epoch its samples have been
    drawn as evenly as possible (counts differ by at most one), and the extra fourth draws of an epoch are spread
    over the corpus, not one stretch of it."""
    dm = datamodule(compose_train, mixture((sources["a"], 1), (sources["b"], 3)))
    mix = dm.datasets["train"]
    size, n = mix.samples[1], mix.draws[1]
    whole = n // size
    assert whole >= 2 and n % size
    draws = drawn(mix, 1, epochs=5)
    cycles = [tuple(draws[i : i + size]) for i in range(0, len(draws) - size + 1, size)]
    assert len(cycles) >= 5 * whole
    assert all(sorted(cycle) == list(range(size)) for cycle in cycles)
    assert tuple(range(size)) not in cycles and len(set(cycles)) == len(cycles)

    seen = np.zeros(size, dtype=int)
    for epoch in range(3):  # in the order training sees them, whole epochs
        for e, k in epoch_order(mix, epoch, dm.seed):
            s, _, p = mix.locate(e, k)
            if s == 1:
                seen[p] += 1
        assert seen.max() - seen.min() <= 1, epoch
    extra = sorted(draws[whole * size : n])  # the draws of epoch 0 beyond its whole cycles
    assert extra != list(range(extra[0], extra[0] + len(extra)))


def test_a_mixture_holds_no_table_of_samples(sources, compose_train):
    """A 25 times larger source pickles (as each DataLoader worker receives the dataset) to the same size."""
    small = datamodule(compose_train, mixture((sources["a"], 1), (sources["b"], 1))).datasets["train"]
    large = datamodule(compose_train, mixture((sources["a"], 1), (sources["big"], 10))).datasets["train"]
    assert large.samples[1] > 20 * small.samples[1]
    assert abs(len(pickle.dumps(large)) - len(pickle.dumps(small))) < 64


# -- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights,extra,message",
    [
        ((1, 0), (), r"^data.sources\[1\].weight=0 must be a number > 0 \(the source's share of the mixture"),
        ((1, -2.5), (), r"^data.sources\[1\].weight=-2.5 must be a number > 0"),
        ((1, "lots"), (), r"^data.sources\[1\].weight='lots' must be a number > 0"),
        ((1, 3), ("data.max_repeat=3",), r"^data.sources\[1\] \('b', weight 3\) would be drawn (\d+) times per "
         r"mixture epoch from its (\d+) samples, 3.\d\d repeats, more than data.max_repeat=3: lower its weight or "
         r"raise data.max_repeat$"),
    ],
)  # fmt: skip
def test_bad_weights_are_refused_in_one_line_before_any_work(sources, compose_train, weights, extra, message):
    cfg = compose_train("data=prepared", f"data.seq_len={SEQ_LEN}", *extra,
                        mixture((sources["a"], weights[0]), (sources["b"], weights[1])))  # fmt: skip
    with pytest.raises(ConfigError, match=message) as refused:
        build(cfg, "data")
    assert "\n" not in str(refused.value)


def test_the_allowed_repeat_is_max_repeat(sources, compose_train):
    dm = datamodule(compose_train, mixture((sources["a"], 1), (sources["b"], 3)), "data.max_repeat=4")
    mix = dm.datasets["train"]
    assert 3 * mix.samples[1] < mix.draws[1] <= 4 * mix.samples[1]  # refused at 3 (above), drawn at 4


@pytest.mark.parametrize("case", ["both", "tokenizers", "names", "neither"])
def test_settings_that_make_no_mixture_are_refused_in_one_line(sources, compose_train, case):
    a, b, other = sources["a"], sources["b"], sources["other"]
    overrides, message = {
        "both": ((f"data.path={a}", mixture((b, 1))),
                 rf"^data.path='{a}' and data.sources are both set: give one prepared directory"),
        "tokenizers": ((mixture((a, 1), (other, 1)),),
                       rf"^data.sources\[1\] \('{other}'\) was prepared with tokenizer \S+, data.sources\[0\] \('{a}'\)"
                       r" with \S+: a mixture has one tokenizer"),
        "names": ((mixture((a, 1), (b, 1), (a, 2)),),
                  r"^data.sources\[2\] is named 'a' like data.sources\[0\]: give one of them another name"),
        "neither": ((), r"^data.path is not set: .* or a mixture of several \(data.sources="),
    }[case]  # fmt: skip
    with pytest.raises(ConfigError, match=message) as refused:
        build(compose_train("data=prepared", *overrides), "data")
    assert "\n" not in str(refused.value)


def test_a_source_named_twice_may_be_given_two_names(sources, compose_train):
    dm = datamodule(compose_train, mixture((sources["a"], 1), (sources["a"], 1, "again")))
    assert dm.datasets["train"].names == ["a", "again"]


def test_the_data_config_of_a_run_from_before_mixtures_still_builds(sources, compose_train):
    """eval.py rebuilds a run's data module from its saved config, which lacks data.sources and data.max_repeat."""
    cfg = compose_train("data=prepared", f"data.path={sources['a']}", f"data.seq_len={SEQ_LEN}")
    with open_dict(cfg):
        del cfg.data.sources, cfg.data.max_repeat
    assert len(build(cfg, "data").manifest["splits"]["train"]["shards"]) == 2


# -- training ---------------------------------------------------------------------------------------------------


def recorded(compose_train, out_dir: Path, steps: int, *extra: str) -> tuple[dict, dict]:
    """A run's recorded batches (helpers_record.RecordBatches) and its metrics.json."""
    cfg = compose_train(
        *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=SEQ_LEN),
        "data=prepared",
        f"data.seq_len={SEQ_LEN}",
        f"data.batch_size={BATCH}",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
        "callbacks.run_checkpoint.every_n_train_steps=7",
        "callbacks.run_checkpoint.keep_last=20",
        "model.config.resid_pdrop=0.1",
        "model.config.attn_pdrop=0.1",
        "+callbacks.record._target_=helpers_record.RecordBatches",
        f"+callbacks.record.out_dir={out_dir}",
        *extra,
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir / "run")
    train(cfg)
    return json.loads((out_dir / "rank0.json").read_text()), json.loads((out_dir / "run" / "metrics.json").read_text())


@pytest.mark.integration
def test_training_on_one_source_of_weight_one_sees_data_path_batches(sources, compose_train, tmp_path):
    plain, _ = recorded(compose_train, tmp_path / "path", 3, f"data.path={sources['a']}")
    mixed, metrics = recorded(compose_train, tmp_path / "mixed", 3, mixture((sources["a"], 1)))
    assert len(plain["samples"]) == 3 * BATCH and mixed["samples"] == plain["samples"]
    assert metrics["train/tokens/a"] == 3 * BATCH * SEQ_LEN


@pytest.mark.integration
def test_resume_across_mixture_epochs_is_bitwise_and_counts_tokens_per_source(sources, compose_train, tmp_path):
    """Weights 1:1 (a drawn about 2/3 of its samples per mixture epoch, b about twice): 50 steps cross two mixture
    epoch boundaries. Resumed from step 7 of the first epoch, every later batch, loss and learning rate and the final
    weights equal the uninterrupted run's; both log the tokens and epochs each source gave, counted again from the
    sampler's order."""
    mix_setting = mixture((sources["a"], 1), (sources["b"], 1))
    full, full_metrics = recorded(compose_train, tmp_path / "full", 50, mix_setting)
    assert full["epochs"][-1] == 2, "the run must cross two mixture epoch boundaries"
    ckpt = tmp_path / "full" / "run" / "checkpoints" / "step_000007.ckpt"
    resumed, resumed_metrics = recorded(compose_train, tmp_path / "resumed", 50, mix_setting, f"ckpt_path={ckpt}")

    assert resumed["samples"] == full["samples"][7 * BATCH :]
    assert resumed["losses"] == full["losses"][7:] and resumed["lrs"] == full["lrs"][7:]
    last = [tmp_path / run / "run" / "checkpoints" / "last.ckpt" for run in ("full", "resumed")]
    weights = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in last]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])

    # what the run trained on is the sampler's order over the mixture, and the per-source counts are its sources
    dm = datamodule(compose_train, mix_setting)
    mix = dm.datasets["train"]
    keys = [key for epoch in range(3) for key in epoch_order(mix, epoch, dm.seed)][: 50 * BATCH]
    assert [sample_hash(mix[key]) for key in keys] == full["samples"]
    per_source = np.bincount([mix.locate(*key)[0] for key in keys], minlength=2)
    for name, samples, size in zip(("a", "b"), per_source, mix.samples, strict=True):
        assert full_metrics[f"train/tokens/{name}"] == resumed_metrics[f"train/tokens/{name}"] == samples * SEQ_LEN
        assert full_metrics[f"train/epochs/{name}"] == pytest.approx(samples / size)
    assert full_metrics["train/epochs/b"] > 4 > 1.5 > full_metrics["train/epochs/a"] > 1


@pytest.mark.integration
def test_resuming_with_other_weights_is_refused(sources, compose_train, tmp_path):
    trained = mixture((sources["a"], 1), (sources["b"], 3))
    recorded(compose_train, tmp_path / "first", 2, trained)
    ckpt = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    other = mixture((sources["a"], 1), (sources["b"], 1))
    with pytest.raises(ConfigError, match=r"was trained with another corpus \(.data.sources=\[a: .* weight 3\]. .*"
                       r"this run's data.sources=\[a: .* weight 1\] has mixture-\w+: sources added"):  # fmt: skip
        recorded(compose_train, tmp_path / "other", 4, other, f"ckpt_path={ckpt}")
    # weights in the same proportions draw the same samples: the same data
    same = datamodule(compose_train, mixture((sources["a"], 2), (sources["b"], 6)))
    assert same._data_fingerprint()[1] == datamodule(compose_train, trained)._data_fingerprint()[1]


# -- ranks ------------------------------------------------------------------------------------------------------


def test_two_ranks_take_disjoint_halves_of_each_global_batch(sources, compose_train):
    """The global batch is a contiguous block of the mixture epoch's one seeded permutation, whatever the ranks;
    with two ranks each takes half of it (4 of 8), the two halves disjoint."""
    dm = datamodule(compose_train, mixture((sources["a"], 1), (sources["b"], 3)))
    mix = dm.datasets["train"]
    for epoch in (0, 1):
        one = epoch_order(mix, epoch, dm.seed)
        ranks = [epoch_order(mix, epoch, dm.seed, world=2, rank=r) for r in (0, 1)]
        micro = BATCH // 2
        for step in range(len(mix) // BATCH):
            shares = [set(rank[step * micro : (step + 1) * micro]) for rank in ranks]
            assert not shares[0] & shares[1]
            assert shares[0] | shares[1] == set(one[step * BATCH : (step + 1) * BATCH])


@pytest.mark.integration
def test_two_cpu_ranks_train_on_disjoint_halves_and_count_every_rank_samples(sources, compose_train, tmp_path):
    """`python train.py` on two gloo ranks: each step's global batch is the one-rank order's next block, split
    between the ranks; the tokens logged (every 4 steps, the last at step 12) and saved (at step 5, between two
    logs) per source are both ranks' (an all-reduce), not rank 0's."""
    mix_setting = mixture((sources["a"], 1), (sources["b"], 3))
    steps, run_dir = 12, tmp_path / "run2"
    cmd = [sys.executable, str(ROOT / "train.py"), "data=prepared", mix_setting, f"data.seq_len={SEQ_LEN}",
           f"data.batch_size={BATCH}", "data.num_workers=0", "trainer=ddp_cpu", "trainer.devices=2",
           f"trainer.max_steps={steps}", "trainer.val_check_interval=10", "trainer.limit_val_batches=1",
           "trainer.log_every_n_steps=4", "callbacks.run_checkpoint.every_n_train_steps=5",
           *run_overrides.model(n_layer=2, n_embd=32, n_head=4, n_inner=64, n_positions=SEQ_LEN),
           "extras.print_config=false", "callbacks.progress_bar.refresh_rate=0",
           "+callbacks.record._target_=helpers_record.RecordBatches", f"+callbacks.record.out_dir={tmp_path / 'rec'}",
           f"hydra.run.dir={run_dir}", f"paths.data_dir={tmp_path / 'data'}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
           "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}  # fmt: skip
    for var in ("SLURM_JOB_ID", "SLURM_PROCID", "RANK", "LOCAL_RANK", "SANTACODER_RUN_ID"):
        env.pop(var, None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / "rec" / f"rank{r}.json").read_text()) for r in (0, 1))

    dm = datamodule(compose_train, mix_setting)
    mix = dm.datasets["train"]
    keys = epoch_order(mix, 0, dm.seed)[: steps * BATCH]
    half = BATCH // 2
    for step in range(steps):
        # as multisets: an up-weighted source's sample can come twice in one batch (two cycles), the same text
        # when FIM left both draws alone; which rank takes which position is the sampler's (tested above)
        shares = [Counter(r["samples"][step * half : (step + 1) * half]) for r in (r0, r1)]
        assert shares[0] + shares[1] == Counter(
            sample_hash(mix[key]) for key in keys[step * BATCH : (step + 1) * BATCH]
        )

    def tokens(upto_step: int) -> list[int]:
        per_source = np.bincount([mix.locate(*key)[0] for key in keys[: upto_step * BATCH]], minlength=2)
        return (per_source * SEQ_LEN).tolist()

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [metrics["train/tokens/a"], metrics["train/tokens/b"]] == tokens(steps)
    saved = torch.load(run_dir / "checkpoints" / "step_000005.ckpt", map_location="cpu", weights_only=True)
    (state,) = [s for key, s in saved["callbacks"].items() if key.startswith("MixtureMonitor")]
    assert [state["samples_seen"][name] * SEQ_LEN for name in ("a", "b")] == tokens(5)
