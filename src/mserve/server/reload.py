"""Polling the model repository: reload a model whose files changed, load a folder that
appeared, unload one that went away (Triton's ``--model-control-mode=poll``).

Every ``poll_interval_s`` the poller takes a cheap :class:`Signature` of each model folder (the
names, sizes and modification times of its files: config.yaml, version folders and what they
hold) and compares it with the one the manager recorded when it last loaded, or tried to load,
the model. A folder is acted on once it looked the same on two polls in a row, so that a model
still being copied in is not loaded half-written. What to do is decided by a pure function,
:func:`plan`; each load is a :meth:`ModelManager.load_async` transaction, so a broken new version
leaves the old ones serving. A folder whose load failed is not tried again until its files
change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mserve.errors import ModelNotFound, MserveError
from mserve.repository import Repository

if TYPE_CHECKING:  # the manager records signatures with this module's signature()
    from mserve.server.models import ModelManager

log = logging.getLogger("mserve.reload")

#: A file of a model folder: its path relative to the folder, its size and its mtime (ns).
FileStat = tuple[str, int, int]

#: What the repository index says of a model whose folder was removed.
REMOVED = "unloaded: its folder was removed from the repository"

_MAX_DEPTH = 8  # folders nested deeper than this inside a model folder are not looked into


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model folder held when it was looked at: the files shared by its versions
    (config.yaml, a drift reference, ...) and, per version folder, the files in it."""

    shared: tuple[FileStat, ...] = ()
    versions: Mapping[str, tuple[FileStat, ...]] = field(default_factory=dict)


def _files(folder: Path, prefix: str, depth: int = 0) -> list[FileStat]:
    """Every file under ``folder`` (hidden ones skipped), with paths that start with ``prefix``."""
    found: list[FileStat] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # removed or unreadable meanwhile: it holds nothing now
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue  # editors' swap files and the like
        try:
            if entry.is_dir():
                if depth < _MAX_DEPTH:
                    found.extend(_files(Path(entry.path), f"{prefix}{entry.name}/", depth + 1))
                continue
            st = entry.stat()
        except OSError:  # removed between the listing and the stat
            continue
        found.append((prefix + entry.name, st.st_size, st.st_mtime_ns))
    return sorted(found)


def signature(folder: Path) -> Signature:
    """The signature of one model folder; a folder named by digits is a version folder."""
    shared: list[FileStat] = []
    versions: dict[str, tuple[FileStat, ...]] = {}
    for path, size, mtime in _files(folder, ""):
        top, sep, _ = path.partition("/")
        if sep and top.isascii() and top.isdigit() and top == str(int(top)):
            versions[top] = (*versions.get(top, ()), (path, size, mtime))
        else:
            shared.append((path, size, mtime))
    return Signature(tuple(shared), versions)


def scan(repository: Repository) -> dict[str, Signature]:
    """The signature of every model folder of the repository, by model name."""
    return {name: signature(repository.root / name) for name in repository.names()}


def unchanged_versions(loaded: Signature | None, now: Signature) -> frozenset[int]:
    """Versions whose files, and the shared files, are as they were when ``loaded`` was taken:
    their loaded objects can be kept as they are."""
    if loaded is None or loaded.shared != now.shared:
        return frozenset()
    return frozenset(
        int(v) for v, files in now.versions.items() if files and loaded.versions.get(v) == files
    )


@dataclass(frozen=True, slots=True)
class Action:
    """One thing a poll does to a model: load (or reload) it, keeping the versions ``keep`` as
    loaded, or unload it."""

    kind: Literal["load", "unload"]
    name: str
    keep: frozenset[int] = frozenset()


def plan(
    acted: Mapping[str, Signature],
    loaded: Mapping[str, Signature],
    previous: Mapping[str, Signature],
    now: Mapping[str, Signature],
) -> list[Action]:
    """What one poll does, given what each folder held when it was last acted on (``acted``),
    when it last loaded well (``loaded``), on the previous poll (``previous``) and now.

    A folder that is new, or differs from when it was last acted on, is loaded once it looks the
    same as on the previous poll (it is not being written any more); one that was acted on and
    is gone on this poll and the previous one is unloaded. A folder whose load failed was acted
    on too, so it is not tried again until its files change.
    """
    actions: list[Action] = []
    for name in sorted(now):
        sig = now[name]
        if acted.get(name) == sig or previous.get(name) != sig:
            continue  # nothing new, or still changing: look again on the next poll
        actions.append(Action("load", name, unchanged_versions(loaded.get(name), sig)))
    for name in sorted(acted):
        if name not in now and name not in previous:
            actions.append(Action("unload", name))
    return actions


class RepositoryPoller:
    """Keeps the models of one :class:`ModelManager` in step with their folders: call
    :meth:`start` once the server has loaded its models, then :meth:`poll` every interval.

    What each folder held when it was last loaded (or tried) is the manager's record
    (:meth:`ModelManager.files`), taken as each load read the folder: loads through the API
    count, and a change made while the server was starting is seen as one.
    """

    def __init__(self, models: ModelManager) -> None:
        self.models = models
        self._previous: dict[str, Signature] = {}  # what the previous poll saw
        self._refused: dict[str, Signature] = {}  # folders refused before any load (bad names)

    def start(self) -> None:
        """Take a first look at the repository (changes are acted on from the next poll)."""
        self._previous = scan(self.models.repository)

    async def poll(self) -> list[Action]:
        """Look at the repository once and act on what changed; returns what it did. The scan
        and the loads run off the event loop."""
        now = await asyncio.to_thread(scan, self.models.repository)
        files = self.models.files()
        acted = {n: tried for n, (tried, _) in files.items() if tried is not None}
        for name, sig in self._refused.items():
            acted.setdefault(name, sig)
        loaded = {n: sig for n, (_, sig) in files.items() if sig is not None}
        actions = plan(acted, loaded, self._previous, now)
        self._previous = now
        for action in actions:
            if action.kind == "unload":
                await self._unload(action.name)
            else:
                await self._load(action, now[action.name])
        return actions

    async def _load(self, action: Action, sig: Signature) -> None:
        name = action.name
        log.info(
            "model %s %s in the repository; loading it%s",
            name,
            "changed" if name in self.models.names() else "appeared",
            f" (versions {', '.join(map(str, sorted(action.keep)))} unchanged)"
            if action.keep
            else "",
        )
        try:
            await self.models.load_async(name, action.keep)
        except MserveError as exc:
            # the manager logged and counted a failed load, and its index entry says why;
            # a folder it refused before loading (a name it cannot serve) is noted here
            if name not in self.models.names():
                self._refused[name] = sig
                log.error("model folder %s: %s", name, exc)
            return
        self._refused.pop(name, None)

    async def _unload(self, name: str) -> None:
        if self._refused.pop(name, None) is not None:
            return
        log.warning("model %s: its folder was removed from the repository; unloading it", name)
        with contextlib.suppress(ModelNotFound):
            await self.models.unload_async(name, REMOVED)


async def poll_repository(models: ModelManager, interval_s: float, stop: asyncio.Event) -> None:
    """Every ``interval_s`` seconds until ``stop`` is set, load, reload and unload the models
    whose folders changed (see :class:`RepositoryPoller`); a failing poll is logged and the
    next one tries again."""
    poller = RepositoryPoller(models)
    started = False
    while not stop.is_set():
        try:
            if not started:
                await asyncio.to_thread(poller.start)
                started = True
            else:
                await poller.poll()
        except Exception:  # an unreadable repository must not stop the server
            log.exception("cannot poll the model repository %s", models.repository.root)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
