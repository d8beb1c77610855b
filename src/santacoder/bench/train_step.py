"""Training-step speed and memory: our LightningModule's loss against transformers' GPTBigCode computing its own.

    python -m santacoder.bench.train_step                 # tiny and mid shapes (a few minutes on 2 cores)
    python -m santacoder.bench.train_step --compile       # also torch.compile'd blocks, compile time included
    python -m santacoder.bench.train_step --smoke         # seconds: the suite runs this

One step is forward, loss, backward and AdamW, the optimizer configured in configs/model/module/default.yaml
for both models (the same weight-decay groups), so the ratio is that of the models and their losses. The same
random weights are written with ``save_hf`` and loaded as ``GPTBigCodeForCausalLM`` pinned to sdpa attention,
float32 and the same threads; dropout is off in both. Before timing, the two losses on the first batch are
checked equal. Each variant then trains its own copy in alternating rounds; the table gives median tokens/s
and the ratio to transformers. Peak memory is what torch allocates during one step beyond the weights and the
optimizer state (the profiler's allocator accounting on CPU, the caching allocator's peak on CUDA).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from santacoder.bench.common import interleaved, machine, mib, peak_bytes, table
from santacoder.checkpoints.loading import save_hf
from santacoder.conf.compose import CONFIG_DIR
from santacoder.config import GPTConfig
from santacoder.training.module import SantaCoderLitModule, parameter_groups

NO_DROPOUT = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
SHAPES = {
    # name: (config, micro batch, sequence length)
    "tiny": (GPTConfig.from_name("tiny"), 8, 256),  # make train's model: 4 x 128, vocab 4096
    "mid": (
        GPTConfig(vocab_size=49280, n_positions=1024, n_embd=512, n_layer=8, n_head=8, n_inner=2048, **NO_DROPOUT),
        4,
        256,
    ),  # SantaCoder's vocabulary: the LM head is a third of the FLOPs, the logits the largest activation
}


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile needs on CPU (inductor writes and builds C++), or None."""
    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return next((path for name in names if name and (path := shutil.which(name))), None)


def optimizer_config() -> dict:
    """The project's default optimizer node (the one file that holds it)."""
    node = OmegaConf.load(CONFIG_DIR / "model" / "module" / "default.yaml")
    return OmegaConf.to_container(node.optimizer, resolve=True)


THEIRS = "transformers GPTBigCode"


class Variant:
    """One model and its optimizer; ``step()`` trains on the fixed batch once and returns the loss."""

    def __init__(self, name: str, loss_fn, module: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.name, self.loss_fn, self.module, self.optimizer = name, loss_fn, module, optimizer

    def step(self) -> torch.Tensor:
        loss = self.loss_fn()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()


def build(config: GPTConfig, batch: dict, device: str, compile_: bool) -> list[Variant]:
    """Ours with the chunked and the full loss (and compiled, with ``compile_``), then transformers', all from
    the same weights, each with its own optimizer."""
    from hydra.utils import instantiate
    from transformers import GPTBigCodeForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    opt_cfg = optimizer_config()
    plan = [("santacoder, chunked loss", "chunked", False), ("santacoder, full loss", "full", False)]
    if compile_ and (device == "cuda" or cxx_compiler()):
        plan.append(("santacoder, chunked loss, compiled", "chunked", True))
    variants, state = [], None
    for name, loss_impl, compiled in plan:
        module = SantaCoderLitModule(
            config.to_dict(), optimizer=opt_cfg, attn_impl="sdpa", loss_impl=loss_impl, compile=compiled
        )
        if state is None:
            state = {k: v.clone() for k, v in module.model.state_dict().items()}
        module.model.load_state_dict(state)
        module.to(device).train()
        module.configure_model()  # compiles each block in place when asked, as training does
        variants.append(Variant(name, lambda m=module: m.loss(batch), module, module.make_optimizer()))

    with tempfile.TemporaryDirectory() as tmp:
        save_hf(variants[0].module.model, Path(tmp) / "hf")
        theirs = GPTBigCodeForCausalLM.from_pretrained(Path(tmp) / "hf", attn_implementation="sdpa")
    theirs.to(device).train()
    weight_decay = opt_cfg.pop("weight_decay")
    their_opt = instantiate(opt_cfg)(parameter_groups(theirs, weight_decay, decay_embeddings=True))

    def their_loss():
        # shift_labels: our labels are already the next tokens (transformers shifts `labels` itself otherwise)
        out = theirs(batch["input_ids"], labels=batch["labels"], shift_labels=batch["labels"], use_cache=False)
        return out.loss

    variants.append(Variant(THEIRS, their_loss, theirs, their_opt))
    return variants


def bench_shape(name: str, rounds: int, device: str, compile_: bool) -> list[list[object]]:
    config, micro, seq_len = SHAPES[name]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (micro, seq_len + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[:, ::7] = -100  # some <fim-pad> positions, as FIM batches have
    batch = {"input_ids": ids[:, :-1].to(device), "labels": labels.to(device)}
    variants = build(config, batch, device, compile_)

    # the same weights give the same loss before any step
    with torch.no_grad():
        losses = {v.name: float(v.loss_fn()) for v in variants}
    same = {n: abs(loss - losses[THEIRS]) <= 1e-4 * abs(losses[THEIRS]) for n, loss in losses.items()}
    first_step = {}
    for v in variants:  # the first step builds the optimizer state (and compiles)
        start = time.perf_counter()
        v.step()
        first_step[v.name] = time.perf_counter() - start
    peaks = {v.name: peak_bytes(v.step, device) for v in variants}
    # compiled code runs its own thread pool, which slows the eager variants it alternates with: it is timed
    # in rounds of its own, against ours in eager mode, and compared with transformers through that ratio
    eager = [v for v in variants if "compiled" not in v.name]
    seconds = interleaved({v.name: v.step for v in eager}, rounds=rounds, warmup=1)
    compiled = [v for v in variants if "compiled" in v.name]
    if compiled:
        pair = interleaved({v.name: v.step for v in (eager[0], *compiled)}, rounds=rounds, warmup=1)
        for v in compiled:
            seconds[v.name] = seconds[eager[0].name] * pair[v.name] / pair[eager[0].name]
    tokens = micro * seq_len
    rows = []
    for v in variants:
        saved = "" if v.name == THEIRS else f"{1 - peaks[v.name] / peaks[THEIRS]:.0%}"
        rows.append(
            [name, v.name, f"{tokens / seconds[v.name]:,.0f}", f"{seconds[THEIRS] / seconds[v.name]:.2f}x",
             mib(peaks[v.name]), saved, f"{first_step[v.name]:.1f} s",
             "yes" if same[v.name] else f"NO ({losses[v.name]:.6f} vs {losses[THEIRS]:.6f})"]
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape, two rounds: seconds")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["tiny", "mid"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd blocks (needs a C++ compiler)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.compile and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        # a cold compile is part of the cost being measured: a fresh inductor cache, never one left by an earlier run
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
        atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    torch.set_num_threads(args.threads)
    shapes, rounds = (["tiny"], 2) if args.smoke else (args.shapes, args.rounds)
    print(
        f"training step: {machine(args.device)}; float32, sdpa, the configured AdamW for both; micro batch x "
        f"sequence: {', '.join(f'{n} {SHAPES[n][1]} x {SHAPES[n][2]}' for n in shapes)}; median of {rounds} rounds\n"
    )
    rows = []
    for name in shapes:
        rows += bench_shape(name, rounds, args.device, args.compile)
    headers = ["shape", "variant", "tokens/s", "speed vs transformers", "peak memory of a step",
               "memory saved vs transformers", "first step", "same loss"]  # fmt: skip
    print(table(headers, rows))
    if args.compile and args.device == "cpu" and not cxx_compiler():
        print("\ntorch.compile was not measured: on CPU it needs a C++ compiler (e.g. apt-get install g++)")
    return 0 if all(row[-1] == "yes" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
