"""``val/loss/<language>`` on prepared data: each validation label is counted in the language of the document it
belongs to (with and without FIM), and the per-language losses that training logs and eval.py reports are the
model's loss over exactly those labels."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

import run_overrides  # tests/run_overrides.py (pytest puts tests/ on sys.path)
from helpers_prepared import write_prepared
from santacoder.conf import build
from santacoder.data.corpus import Document, is_validation
from santacoder.data.dataset import PackedFIMDataset
from santacoder.data.languages import TokenLanguages
from santacoder.data.shards import PreparedSplit
from santacoder.evaluation.perplexity import perplexity
from santacoder.evaluation.task import evaluate
from santacoder.model.loss import IGNORE_INDEX
from santacoder.text.fim import undo_fim_segment
from santacoder.training.task import train

VAL_HALF = 0.5  # half the documents held out, by a hash of their names


def three_languages(n: int) -> list[Document]:
    """Documents whose texts are unique and say their language, of uneven lengths."""
    docs = []
    for i in range(n):
        body = "    x = x + 1\n" * (i % 4)
        docs.append(Document(f"m{i}.py", f"def python_{i}(x):\n{body}    return x * {i}\n"))
        docs.append(Document(f"C{i}.java", f"class Java{i} {{\n  int f(int x) {{ return x * {i}; }}\n}}\n"))
        docs.append(Document(f"s{i}.js", f"function javascript{i}(x) {{\n  return x + {i};\n}}\n" * (1 + i % 2)))
    return docs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tokenizer) -> Path:
    docs = three_languages(24)
    out = tmp_path_factory.mktemp("prepared_languages")
    write_prepared(out, [docs[:40], docs[40:]], tokenizer, val_fraction=VAL_HALF)  # two shards
    return out


def reference_languages(prepared: Path, split: PreparedSplit) -> list[str]:
    """Each token of the split's sequence (d1 eod d2 eod ...), labelled with its document's language by walking
    the documents in order: a document's ids, then the eod that ends it."""
    languages = []
    for shard in split.shards:
        for line in (shard / "docs.jsonl").read_text().splitlines():
            doc = json.loads(line)
            languages += [doc["language"]] * doc["num_tokens"]  # num_tokens: its ids and one eod
    return languages


def test_without_fim_each_label_has_its_documents_language(prepared, tokenizer):
    split = PreparedSplit(prepared, "val")
    names = ["java", "js", "py"]
    reference = reference_languages(prepared, split)
    assert len(reference) == split.num_tokens and len(split.shards) == 2
    data = PackedFIMDataset(split, tokenizer, 32, 0.0, 0.0, seed=0, split="val",
                            languages=TokenLanguages.of_split(split, names))  # fmt: skip
    assert len(data) > 10
    for i in range(len(data)):
        got = [names[k] for k in data[i]["language"].tolist()]
        assert got == reference[i * 32 + 1 : i * 32 + 33], i  # labels are tokens 1..32 of the sample


def test_with_fim_each_segment_keeps_its_documents_language(prepared, tokenizer):
    """FIM moves and re-tokenizes the text of each segment: every label of a rewritten segment is still counted in
    the language of the document that text came from (found by the text itself)."""
    split = PreparedSplit(prepared, "val")
    names = ["java", "js", "py"]
    texts = [(doc.text, Path(doc.name).suffix[1:]) for doc in three_languages(24)]
    data = PackedFIMDataset(split, tokenizer, 64, 1.0, 0.5, seed=3, split="val",
                            languages=TokenLanguages.of_split(split, names))  # fmt: skip
    checked = 0
    for i in range(len(data)):
        item = data[i]
        sample = np.concatenate([item["input_ids"][:1].numpy(), np.where(
            item["labels"].numpy() == IGNORE_INDEX, tokenizer.fim_pad_id, item["labels"].numpy())])  # fmt: skip
        languages = [None, *(names[k] for k in item["language"].tolist())]  # the first token has no label
        bounds = [-1, *np.flatnonzero(sample == tokenizer.eod_id).tolist(), len(sample)]
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            segment = [int(t) for t in sample[lo + 1 : hi] if t != tokenizer.fim_pad_id]
            try:
                text = tokenizer.decode(undo_fim_segment(segment, tokenizer))
            except ValueError:  # cut by the sample's end inside its FIM layout
                continue
            owners = {lang for full, lang in texts if len(text) >= 12 and text in full}
            if len(owners) != 1:
                continue  # too short to tell whose it is
            labelled = {languages[p] for p in range(max(lo + 1, 1), min(hi + 1, len(sample)))}
            assert labelled == owners, (i, text)  # its ids and the eod that ends it
            checked += 1
    assert checked > 20


@pytest.mark.integration
def test_training_logs_each_languages_loss_over_exactly_its_labels(prepared, compose_train, tmp_path):
    cfg = compose_train(
        *run_overrides.model(n_layer=1, n_embd=32, n_head=2, n_inner=64, n_positions=32),
        "data=prepared", f"data.path={prepared}", "data.seq_len=32", "data.batch_size=4", "data.num_workers=0",
        "trainer.accelerator=cpu", "trainer.max_steps=6", "trainer.val_check_interval=3",
        "trainer.limit_val_batches=3", "extras.print_config=false", "callbacks.progress_bar.refresh_rate=0",
    )  # fmt: skip
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    metrics = train(cfg)
    assert {"val/loss/java", "val/loss/js", "val/loss/py"} <= set(metrics)

    # the reference: the final model's mean loss over the labels of one language, the others masked out
    from santacoder import load

    model = load(tmp_path / "run" / "checkpoints" / "last.ckpt").eval()
    datamodule = build(cfg, "data")
    datamodule.prepare_data()
    datamodule.setup("validate")
    batches = [batch for _, batch in zip(range(3), datamodule.val_dataloader(), strict=False)]
    names = datamodule.val_languages
    assert names == ["java", "js", "py"]
    totals, counts = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    with torch.no_grad():
        for batch in batches:
            for k, name in enumerate(names):
                labels = torch.where(batch["language"] == k, batch["labels"], IGNORE_INDEX)
                n = int((labels != IGNORE_INDEX).sum())
                if n:
                    totals[name] += float(model(batch["input_ids"], labels=labels)) * n
                    counts[name] += n
    for name in names:
        assert metrics[f"val/loss/{name}"] == pytest.approx(totals[name] / counts[name], rel=1e-5), name
    overall = sum(totals.values()) / sum(counts.values())
    assert metrics["val/loss"] == pytest.approx(overall, rel=1e-5)  # the languages' token-weighted mean

    # eval.py's perplexity reports the same numbers from the same batches
    evaluated = perplexity(model, batches, languages=names)
    for name in names:
        assert evaluated[f"val/loss/{name}"] == pytest.approx(metrics[f"val/loss/{name}"], rel=1e-5)

    # and eval.py on the run: per-language losses, and line infilling from the held-out files of the shards
    run = tmp_path / "run"
    (run / ".hydra").mkdir(exist_ok=True)  # what Hydra writes for `python train.py`
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    evaluated = evaluate(run_overrides.compose_config(
        "eval", tmp_path / "eval", tmp_path / "data", f"ckpt_path={run}", "device=cpu",
        "tasks.perplexity.limit_batches=3", "tasks.fim_single_line.source=corpus",
        "tasks.fim_single_line.lines_per_file=1", "tasks.fim_single_line.max_new_tokens=4",
        "tasks.humaneval.enabled=false",
    ))  # fmt: skip
    for name in names:
        assert evaluated[f"val/loss/{name}"] == pytest.approx(metrics[f"val/loss/{name}"], rel=1e-5)
    held_out = [doc for doc in three_languages(24) if is_validation(doc.name, VAL_HALF)]
    by_language = {lang: sum(1 for d in held_out if d.name.endswith(ext))
                   for lang, ext in (("python", ".py"), ("java", ".java"), ("javascript", ".js"))}  # fmt: skip
    for language, files in by_language.items():  # one line of each held-out file (each has a maskable line)
        assert evaluated[f"fim/{language}/tasks"] == files > 0, language
