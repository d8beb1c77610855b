"""A generated corpus for near-deduplication: distinct files, exact copies, and near-copies whose Jaccard similarity
(over 5-grams of code words, as MinHash sees them) is measured, not assumed."""

import random
import re

WORD = re.compile(r"[A-Za-z0-9_]+")


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = WORD.findall(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def _word(rng: random.Random) -> str:
    return "v_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7))


def render(words: list[str], title: str) -> str:
    """Python-looking lines of four words each, with comments (a few percent: the comments filter keeps it)."""
    lines = [f"# {title}: helpers for the tests"]
    for i in range(0, len(words) - 3, 4):
        a, b, c, d = words[i : i + 4]
        if i % 40 == 0:
            lines.append(f"# then {a}")
        lines.append(f"{a} = {b}({c}, {d})")
    return "\n".join(lines) + "\n"


def near_copy(words: list[str], target: float, rng: random.Random, title: str) -> tuple[str, float]:
    """A copy of ``words`` with words replaced one at a time until its Jaccard similarity to the original drops to
    ``target`` (just above it), and that similarity."""
    original = render(words, title)
    copy = list(words)
    positions = rng.sample(range(len(words)), len(words))
    best = (original, 1.0)
    for position in positions:
        copy[position] = _word(rng)
        text = render(copy, title)
        similarity = jaccard(original, text)
        if similarity < target:
            return best
        best = (text, similarity)
    return best


def dedup_corpus(rng: random.Random, distinct: int, exact: int, near: dict[float, int], words: int = 400) -> dict:
    """Files by name: ``distinct`` unrelated files, ``exact`` pairs of identical files, and for each target Jaccard
    similarity its number of (original, near-copy) pairs. Returns {"files": {name: text}, "pairs": [(a, b,
    similarity)]}."""
    files, pairs = {}, []
    for i in range(distinct):
        files[f"distinct_{i:03d}.py"] = render([_word(rng) for _ in range(words)], f"distinct {i}")
    for i in range(exact):
        text = render([_word(rng) for _ in range(words)], f"exact {i}")
        files[f"exact_{i:03d}_a.py"] = files[f"exact_{i:03d}_b.py"] = text
        pairs.append((f"exact_{i:03d}_a.py", f"exact_{i:03d}_b.py", 1.0))
    for target, count in sorted(near.items()):
        for i in range(count):
            base = [_word(rng) for _ in range(words)]
            title = f"near {target} {i}"
            a, b = f"near_{int(target * 100)}_{i:03d}_a.py", f"near_{int(target * 100)}_{i:03d}_b.py"
            files[a] = render(base, title)
            files[b], similarity = near_copy(base, target, rng, title)
            pairs.append((a, b, similarity))
    return {"files": files, "pairs": pairs}
