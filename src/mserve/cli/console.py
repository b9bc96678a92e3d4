"""The terminal consoles the commands print to."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from mserve.cli.exit_codes import OK

#: Width used when the output is not a terminal (a file, a pipe, CI): rich's default of 80
#: columns folds every figure of a results table.
PIPE_WIDTH = 160


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr), full width when piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def print_written(paths: Sequence[Path], as_json: bool) -> int:
    """Say what a deploy target wrote: ``{"files": [...]}`` on stdout with ``--json``, else a
    'wrote PATH' line each on stderr; returns OK."""
    if as_json:
        print(json.dumps({"files": [str(path) for path in paths]}))
    else:
        for path in paths:
            print(f"wrote {path}", file=sys.stderr)
    return OK
