"""Output piped into a reader that stops early (``agent.py --force | head -1``): the program goes on
quietly and finishes its work (a replay still writes its report), instead of dying of a
``BrokenPipeError`` traceback at the next print."""
from __future__ import annotations

import os
import sys


class _QuietWhenClosed:
    """A text stream that, once its reader has gone, sends the rest of the output to /dev/null."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.reader_gone = False

    def _reader_left(self) -> None:
        self.reader_gone = True
        try:  # what is still buffered (and everything after) goes nowhere, and exit flushes quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_left()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_left()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def quiet_when_the_reader_leaves() -> None:
    """Wrap ``sys.stdout`` (the command-line entry points call this first)."""
    if not isinstance(sys.stdout, _QuietWhenClosed):
        sys.stdout = _QuietWhenClosed(sys.stdout)
