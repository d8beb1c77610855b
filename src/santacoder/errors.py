"""The error types for problems a user must fix: the entry points print their messages without a traceback."""

from __future__ import annotations

import errno


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
