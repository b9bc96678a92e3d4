"""Placeholder: filled in by the work on issue 10."""

from __future__ import annotations

from typing import Any


def register(targets: Any) -> None:
    """Add this module's mserve deploy targets to targets."""
