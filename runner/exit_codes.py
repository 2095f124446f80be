"""The process exit codes, defined once: the README's table of them, and every mode returns one."""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0        # done (also: another run holds the lock, or nothing to do; not for --mode close)
    FAILED = 1    # the run failed; one line on stderr says why
    USAGE = 2     # bad flags, profile or data: nothing was run
    REFUSED = 3   # refused on purpose (--live without a live broker): nothing was traded


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.REFUSED
