"""Rendered deployment files: YAML documents under a comment header, and a folder of texts
written at once. The renderers return texts; only :func:`write_texts` touches the disk."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def yaml_text(doc: Mapping[str, Any], header: str = "") -> str:
    """``doc`` as block YAML in the order it was built, under ``header`` made into ``#``
    comment lines (an empty line of the header stays an empty comment)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(lines) + ("\n" if lines else "") + body


def write_texts(out: Path, texts: Mapping[str, str]) -> list[Path]:
    """Write each ``name: text`` into ``out`` (created if missing; files of those names
    replaced); returns the paths in the order of ``texts``. OSError when it cannot."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
