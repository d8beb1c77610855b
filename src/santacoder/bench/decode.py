"""Decoding speed: ``santacoder.generate`` against transformers' ``generate`` on the same weights.

    python -m santacoder.bench.decode                      # tiny and mid shapes, batch 1 and 8 (a few minutes on CPU)
    python -m santacoder.bench.decode --smoke              # seconds: the suite runs this

The same random model is written with ``save_hf`` and loaded as ``GPTBigCodeForCausalLM`` (sdpa attention, the
same dtype and threads). Both decode greedily from the same prompts for the same number of new tokens; their
tokens are checked equal, then each is timed in alternating rounds (ours, theirs, ours, ...) in this process,
and the table gives the median tokens/s of each and their ratio. Absolute times depend on the machine; the
ratio is the result.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from santacoder.bench.common import machine
from santacoder.checkpoints.loading import save_hf
from santacoder.config import GPTConfig
from santacoder.inference.generation import generate
from santacoder.model.gpt import GPT

SHAPES = {
    "tiny": GPTConfig.from_name("tiny"),  # 4 x 128, vocab 4096: overheads dominate
    "mid": GPTConfig(  # 8 x 512, SantaCoder's vocabulary: matmuls dominate
        vocab_size=49280,
        n_positions=1024,
        n_embd=512,
        n_layer=8,
        n_head=8,
        n_inner=2048,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        resid_pdrop=0.0,
    ),  # fmt: skip
}


def theirs_generate(model, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    out = model.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    return out[:, prompts.shape[1] :]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_shape(name: str, config: GPTConfig, batches: list[int], prompt_len: int, new_tokens: int, rounds: int):
    from transformers import GPTBigCodeForCausalLM

    torch.manual_seed(0)
    ours = GPT(config, attn_impl="sdpa").eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(ours, Path(tmp) / "hf")
        theirs = GPTBigCodeForCausalLM.from_pretrained(Path(tmp) / "hf", attn_implementation="sdpa").eval()
    rows = []
    for batch in batches:
        prompts = torch.randint(0, config.vocab_size, (batch, prompt_len), generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            mine = generate(ours, prompts, new_tokens)
            reference = theirs_generate(theirs, prompts, new_tokens)
        same = torch.equal(mine, reference)
        times = {"ours": [], "transformers": []}
        with torch.inference_mode():
            for _ in range(rounds):
                times["ours"].append(timed(lambda p=prompts: generate(ours, p, new_tokens)))
                times["transformers"].append(timed(lambda p=prompts: theirs_generate(theirs, p, new_tokens)))
        rate = {k: batch * new_tokens / statistics.median(v) for k, v in times.items()}
        rows.append((name, batch, rate["ours"], rate["transformers"], rate["ours"] / rate["transformers"], same))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape, batch 1, a few tokens, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        plan = [("tiny", SHAPES["tiny"], [1], 8, 4, 1)]
    else:
        plan = [(n, c, [1, 8], args.prompt_len, args.new_tokens, args.rounds) for n, c in SHAPES.items()]
    print(f"decoding: {machine()}; float32, sdpa, greedy; prompt {plan[0][3]} tokens, {plan[0][4]} new\n")
    print("| shape | batch | santacoder tok/s | transformers tok/s | ratio | same tokens |")
    print("|---|---|---|---|---|---|")
    all_same = True
    for name, config, batches, prompt_len, new_tokens, rounds in plan:
        for shape, batch, ours, theirs, ratio, same in bench_shape(
            name, config, batches, prompt_len, new_tokens, rounds
        ):
            print(f"| {shape} | {batch} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f}x | {same} |", flush=True)
            all_same &= same
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
