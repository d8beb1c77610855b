#!/usr/bin/env bash
# How this fixture was made: a run directory and checkpoints written by santacoder at commit 7c63784 (the last
# commit before the package was reorganised into layers), kept so that tests/test_legacy_run.py can prove that
# what users hold from before still loads, resumes and evaluates. Run from a checkout of that commit; the
# corpus is ten standard-library modules of Python 3.11.7 (corpus.jsonl, rows in this order).
set -euo pipefail
out=/tmp/legacy
mkdir -p $out
python - <<'PY'
import json, pathlib, sysconfig
std = pathlib.Path(sysconfig.get_paths()["stdlib"])
names = ["colorsys.py", "bisect.py", "keyword.py", "heapq.py", "textwrap.py", "fnmatch.py", "glob.py", "getopt.py",
         "nturl2path.py", "this.py"]
with open("/tmp/legacy/corpus.jsonl", "w") as f:
    for name in names:
        f.write(json.dumps({"content": (std / name).read_text()}) + "\n")
PY
python train.py data.source=$out/corpus.jsonl data.vocab_size=300 data.seq_len=32 data.batch_size=4 data.num_workers=0 \
    data.val_fraction=0.2 data.cache_dir=$out/cache model.config.n_layer=1 model.config.n_embd=32 model.config.n_head=2 \
    model.config.n_inner=64 model.config.n_positions=64 trainer.max_steps=6 trainer.val_check_interval=3 \
    trainer.limit_val_batches=4 trainer.log_every_n_steps=1 callbacks.run_checkpoint.every_n_train_steps=3 \
    callbacks.run_checkpoint.keep_last=2 hydra.run.dir=$out/run
python eval.py ckpt_path=$out/run tasks.fim_single_line.limit=5 tasks.humaneval.enabled=false hydra.run.dir=$out/eval
# Kept here: corpus.jsonl, tokenizer.json (the one the run trained, from $out/cache), run/.hydra/, run/metrics.json,
# run/checkpoints/step_000003.ckpt (resumable mid-run) and last.ckpt (step 6 of the uninterrupted run), and
# reference.json: that commit's logits for one input, its greedy infill and eval.py's metrics ($out/eval/eval.json).
