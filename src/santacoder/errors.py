"""The error types for problems a user must fix: the entry points print their messages without a traceback."""

from __future__ import annotations

import errno
import logging
import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A configuration value or input path is invalid; the message names it and says what to do."""


class OutOfSpaceError(OSError):
    """A write failed for lack of disk space or quota; the message names what was being written, where, and
    what was kept."""


def is_disk_full(error: BaseException | None) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def out_of_space(error: OSError, writing: str, where, advice: str) -> OutOfSpaceError:
    """The one-line error for a full disk while ``writing`` into ``where``."""
    reason = error.strerror or "no space left on device"
    return OutOfSpaceError(error.errno, f"{reason} while writing {writing} in {str(where)!r}; {advice}")


def stop(message: str, log: logging.Logger, context: str) -> NoReturn:
    """End an entry point on a user's problem: ``error: <message>`` once on stderr, exit status 1. The run's log
    file records it too (``<context>: <message>``), but not the console, which would show it twice."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, f"{context}: {message}", None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
