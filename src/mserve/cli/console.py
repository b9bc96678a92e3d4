"""The terminal consoles the commands print to."""

from __future__ import annotations

import sys

from rich.console import Console

#: Width used when the output is not a terminal (a file, a pipe, CI): rich's default of 80
#: columns folds every figure of a results table.
PIPE_WIDTH = 160


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr), full width when piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)
