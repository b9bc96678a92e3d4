"""``mserve repo check DIR``: what would load from a model repository, and why not."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import FAILURE, OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "repo",
        help="inspect a model repository",
        description="Inspect a model repository.",
    )
    rsub = p.add_subparsers(dest="repo_command", metavar="ACTION", required=True)
    c = rsub.add_parser(
        "check",
        help="load every model as the server would and report what loads and why not",
        description=(
            "Load every model of DIR exactly as 'mserve serve' would (config checked, model "
            "opened, warm-up run) and print each model's versions, signature and state. "
            "Exit status 0 when every model loads, 1 when any does not."
        ),
    )
    c.add_argument("directory", type=Path, metavar="DIR", help="model repository directory")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(run=run_check)


def check(directory: Path) -> list[dict[str, Any]]:
    """Load every model of the repository and describe each (the Python API of the command)."""
    from mserve.config import dynamic_batching_to_dict
    from mserve.repository import Repository
    from mserve.server.models import ModelManager

    manager = ModelManager(Repository(directory))
    logging.getLogger("mserve.models").setLevel(logging.CRITICAL)
    manager.load_all()
    rows: list[dict[str, Any]] = []
    try:
        by_name: dict[str, list[Any]] = {}
        for entry in manager.index():
            by_name.setdefault(entry.name, []).append(entry)
        for name, entries in by_name.items():
            row: dict[str, Any] = {
                "name": name,
                "state": entries[0].state,
                "versions": [e.version for e in entries if e.version is not None],
                "reason": entries[0].reason,
            }
            if row["state"] == "READY":
                md = manager.metadata(name)
                mv = manager.get(name)
                row["platform"] = md.platform
                row["inputs"] = [t.to_dict() for t in md.inputs]
                row["outputs"] = [t.to_dict() for t in md.outputs]
                row["max_batch_size"] = mv.config.max_batch_size
                row["instance_count"] = mv.config.instance_count
                row["instance_kind"] = mv.config.instance_kind
                db = mv.config.dynamic_batching
                row["dynamic_batching"] = None if db is None else dynamic_batching_to_dict(db)
            rows.append(row)
    finally:
        manager.close()
    return rows


def run_check(args: argparse.Namespace) -> int:
    rows = check(args.directory)
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
    else:
        from rich.table import Table

        from mserve.cli.console import console

        table = Table(title=f"model repository {args.directory}")
        for col in ("model", "versions", "state", "inputs", "outputs", "why not"):
            table.add_column(col, overflow="fold")

        def sig(ts: list[dict[str, Any]]) -> str:
            return "\n".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in ts)

        for r in rows:
            ok = r["state"] == "READY"
            table.add_row(
                r["name"],
                ", ".join(r["versions"]),
                f"[green]{r['state']}[/]" if ok else f"[red]{r['state']}[/]",
                sig(r.get("inputs", [])),
                sig(r.get("outputs", [])),
                "" if ok else r["reason"],
            )
        console().print(table)
        if not rows:
            print("no model folders found")
    return OK if rows and all(r["state"] == "READY" for r in rows) else FAILURE
