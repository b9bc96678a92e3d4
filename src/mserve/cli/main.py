"""The ``mserve`` command: one sub-command per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mserve import __version__
from mserve.cli import (
    bench,
    compare,
    convert,
    deploy,
    monitor,
    quickstart,
    repo,
    report,
    results,
    serve,
    tune,
)
from mserve.cli.exit_codes import INTERRUPTED, exit_code_of
from mserve.errors import MserveError

COMMANDS = (
    convert,
    serve,
    repo,
    bench,
    results,
    report,
    tune,
    compare,
    deploy,
    monitor,
    quickstart,
)


def parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to check that the docs list every option)."""
    p = argparse.ArgumentParser(
        prog="mserve",
        description=(
            "Convert, serve, deploy, monitor and evaluate machine-learning models. "
            "Start with 'mserve quickstart'."
        ),
    )
    p.add_argument("--version", action="version", version=f"mserve {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see mserve.cli.exit_codes)."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except MserveError as exc:
        print(f"mserve: error: {exc}", file=sys.stderr)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
