"""The table scripts/gpu_check prints last: one row per part, read from the parts.tsv, junit XML and measurement
JSON files the script leaves in its output folder. Usage: gpu_check_table.py OUT_DIR REPO_DIR (exit 1 when any
part failed). GPU_CHECK_WALL holds the total wall time in seconds."""

import json
import os
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

out, repo = Path(sys.argv[1]), Path(sys.argv[2])
rows, failed, tails = [], False, []


def short(text, n=110):
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= n else line[: n - 3] + "..."


def last_line(log):
    try:
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    err = [line for line in lines if "Error" in line or "error:" in line]
    return short((err or lines or ["empty log"])[-1])


def tail(log, n=12):
    """The end of a log whose part left no result to read (a crash, a timeout): shown above the table."""
    try:
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if not line.startswith('{"')]
    except OSError:
        return
    lines = lines[-n:]
    tails.append(f"--- last {len(lines)} lines of {os.path.relpath(log, repo)} ---\n" + "\n".join(lines))


def junit_cases(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:  # missing, or cut short by a kill
        raise FileNotFoundError(path) from e
    for case in root.iter("testcase"):
        parts = case.get("classname", "").split(".")  # tests.test_gpu[.TestClass] -> test_gpu.py[::TestClass]
        parts = parts[1:] if parts[0] == "tests" and len(parts) > 1 else parts
        mod = max((i for i, p in enumerate(parts) if p.startswith("test")), default=len(parts) - 1)
        test_id = "::".join(["/".join(parts[: mod + 1]) + ".py", *parts[mod + 1 :], case.get("name", "")])
        status, reason = "PASS", ""
        for tag, label in (("failure", "FAIL"), ("error", "ERROR"), ("skipped", "SKIP")):
            node = case.find(tag)
            if node is not None:
                status, reason = label, short(node.get("message") or node.text)
                break
        yield test_id, status, reason


with open(out / "parts.tsv") as f:
    parts = [line.rstrip("\n").split("\t") for line in f if line.strip()]
for kind, name, status, code, secs, log, note in parts:
    if status in ("notrun", "skipped", "budget"):  # budget: the part did not fit, so nothing is proven
        failed |= status == "budget"
        rows.append((name, {"skipped": "SKIP", "notrun": "NOT RUN", "budget": "FAIL"}[status], note))
        continue
    if status == "timeout":
        failed = True
        rows.append((name, "FAIL", f"{note.replace('timeout', 'timed out after')}; {last_line(log)}"))
        tail(log)
        continue
    if kind in ("cpu", "gpu"):
        try:
            cases = list(junit_cases(out / f"{kind}.xml"))
        except FileNotFoundError:
            failed = True
            rows.append((name, "FAIL", f"exit {code}, no readable junit xml; {last_line(log)}"))
            tail(log)
            continue
        count = {s: sum(1 for _, st, _ in cases if st == s) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
        broken = count["FAIL"] + count["ERROR"]
        bad = broken > 0 or code != "0"
        failed |= bad
        detail = (
            f"{count['PASS']} passed, {count['FAIL']} failed, {count['ERROR']} errors, {count['SKIP']} skipped "
            f"of {len(cases)} ({secs} s)"
        )
        if code != "0" and not broken:
            detail += f"; pytest exit {code}: {last_line(log)}"
            tail(log)
        if kind == "cpu":  # many tests: the skip reasons, and the failures one per row
            reasons = Counter(why for _, st, why in cases if st == "SKIP")
            if reasons:
                detail += "; skips: " + ", ".join(f"{why} x{n}" if n > 1 else why for why, n in reasons.most_common())
            listed = [(f"  {tid}", st, why) for tid, st, why in cases if st in ("FAIL", "ERROR")][:15]
        else:  # a handful of GPU tests: every one, with its reason
            listed = [(f"  {tid}", st, why) for tid, st, why in cases]
        rows.append((name, "FAIL" if bad else "PASS", short(detail, 200)))
        rows += listed
    elif kind == "measure":
        result_file = Path(log).with_suffix(".json")
        try:
            r = json.loads(result_file.read_text())
        except (OSError, ValueError):
            r = {}
        if r.get("status") == "ok":
            d = [
                f"{r.get('tokens_per_sec', 0):,.0f} tok/s",
                f"{r['tflops_per_sec']:.1f} TFLOP/s" if "tflops_per_sec" in r else "TFLOP/s n/a",
                f"MFU {r['mfu']:.1%}" if "mfu" in r else "MFU n/a",
                f"peak {r['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in r else "peak n/a",
                f"loss {r['loss']:.3f}",
            ]
            if "loss_scale" in r:
                d.append(f"fp16 skipped {r.get('skipped_steps', 0):.0f}, scale {r['loss_scale']:.0f}")
            d.append(f"{secs} s" + (", built the data" if not r.get("data_cached", True) else ""))
            rows.append((name, "PASS", " | ".join(d)))
        elif "/micro" in name and "out of memory" in (r.get("error") or "").lower():
            rows.append((name, "NOFIT", "this micro batch does not fit: " + short(r["error"], 90)))  # a finding
        else:
            failed = True
            rows.append((name, "FAIL", r.get("error") or f"exit {code}, no result; {last_line(log)}"))
            if not r:
                tail(log)

v = json.loads((out / "versions.json").read_text())
width = max(len(n) for n, _, _ in rows)
lines = [
    "",
    f"gpu_check summary: device {v.get('device', 'none (no CUDA device)')}"
    + (f" (sm {v['capability']})" if "capability" in v else ""),
    f"  python {v['python']} | torch {v['torch']} (CUDA {v.get('cuda')}) | lightning {v['lightning']} | "
    f"xformers {v['xformers']} | hydra {v['hydra-core']}",
    "",
    f"{'part':<{width}}  {'result':<7}  details",
    f"{'-' * width}  {'-' * 7}  {'-' * 60}",
    *(f"{n:<{width}}  {s:<7}  {d}".rstrip() for n, s, d in rows),
    "",
    f"total wall time {int(os.environ.get('GPU_CHECK_WALL', 0))} s; logs in {out}"
    + ("" if not failed else "; SOME PARTS FAILED"),
]
text = "\n".join(lines)
(out / "summary.txt").write_text("\n\n".join(tails + [text]) + "\n")
print("\n\n".join(tails + [text]))
sys.exit(1 if failed else 0)
