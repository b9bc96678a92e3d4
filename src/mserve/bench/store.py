"""The results database: every saved ``mserve bench`` run, whole, in one SQLite file.

Each run is stored as its canonical result document (JSON text) beside a few columns pulled
from it (``RunSummary``) so that runs can be listed and filtered without parsing documents.
A run is named by its id, a unique prefix of at least ``MIN_PREFIX`` characters, ``latest``
or ``latest~N`` (N runs before the latest). The layout is versioned with SQLite's
``user_version``; newer layouts are added to ``_MIGRATIONS``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mserve.errors import ConfigError, NotFound

#: Documents of this family are accepted (mserve.bench.result.SCHEMA is its first version).
SCHEMA_FAMILY = "mserve.bench.result/"
MIN_PREFIX = 4
_LATEST = re.compile(r"latest(?:~(\d+))?")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)

#: Layout version N is reached by running the statements of _MIGRATIONS[N - 1].
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE runs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
        " created TEXT NOT NULL, command TEXT NOT NULL, target TEXT, protocol TEXT, model TEXT,"
        " mserve_version TEXT, host TEXT, steps INTEGER NOT NULL, best_throughput_rps REAL,"
        " p99_ms REAL, valid INTEGER NOT NULL, invalid INTEGER NOT NULL,"
        " errors INTEGER NOT NULL, document TEXT NOT NULL)",
        "CREATE INDEX runs_by_created ON runs (created, seq)",
        "CREATE INDEX runs_by_model ON runs (model)",
        "CREATE INDEX runs_by_target ON runs (target)",
    ),
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One stored run at a glance; ``p99_ms`` is the p99 of the step with the best throughput."""

    id: str
    created: str
    command: str
    target: str | None
    protocol: str | None
    model: str | None
    mserve_version: str | None
    host: str | None
    steps: int
    best_throughput_rps: float | None
    p99_ms: float | None
    valid: int
    invalid: int
    errors: int

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> RunSummary:
        """The summary of a result document; ConfigError when it is not one."""
        if not str(doc.get("schema", "")).startswith(SCHEMA_FAMILY):
            raise ConfigError("result document", "schema", f"'{SCHEMA_FAMILY}N'", doc.get("schema"))
        steps = doc.get("steps")
        if not isinstance(steps, list):
            raise ConfigError("result document", "steps", "a list of steps", steps)
        target = doc.get("target") or {}
        machine = doc.get("machine") or {}
        best = max(steps, key=lambda s: s.get("throughput_rps", 0.0), default=None)
        verdicts = [s.get("verdict") for s in steps]
        return cls(
            id=str(doc.get("id") or _content_id(doc)),
            created=str(doc.get("created", "")),
            command=shlex.join(str(a) for a in doc.get("command") or []),
            target=target.get("url"),
            protocol=target.get("protocol"),
            model=target.get("model"),
            mserve_version=machine.get("mserve"),
            host=machine.get("hostname"),
            steps=len(steps),
            best_throughput_rps=None if best is None else best.get("throughput_rps"),
            p99_ms=None if best is None else (best.get("latency_ms") or {}).get("p99"),
            valid=verdicts.count("VALID"),
            invalid=verdicts.count("INVALID"),
            errors=sum(int(s.get("error_count", 0)) for s in steps),
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return asdict(self)


_COLUMNS = tuple(f.name for f in fields(RunSummary))
_ORDER = "ORDER BY created DESC, seq DESC"


def _content_id(doc: Mapping[str, Any]) -> str:
    """An id for a document that carries none: the same document always gets the same id."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


class ResultStore:
    """Saved benchmark runs in the SQLite file ``path`` (created, with its folder, on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                str(path), "location", "a writable results database", str(exc)
            ) from exc
        try:
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigError(
                str(path), "database", "an mserve results database", str(exc)
            ) from exc

    def _migrate(self) -> None:
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise sqlite3.DatabaseError(
                    f"its layout version {version} is newer than this mserve's "
                    f"({len(_MIGRATIONS)}): upgrade mserve"
                )
            for number in range(version + 1, len(_MIGRATIONS) + 1):
                for statement in _MIGRATIONS[number - 1]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise

    def save(self, doc: Mapping[str, Any]) -> str:
        """Store a result document (replacing any run with the same id); returns the run id."""
        summary = RunSummary.of(doc)
        values = {**summary.to_dict(), "document": json.dumps(doc)}
        names = ", ".join(values)
        updates = ", ".join(f"{n} = excluded.{n}" for n in values if n != "id")
        with self._db:
            self._db.execute(
                f"INSERT INTO runs ({names}) VALUES ({', '.join('?' * len(values))}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                tuple(values.values()),
            )
        return summary.id

    def list(
        self, limit: int | None = None, model: str | None = None, target: str | None = None
    ) -> list[RunSummary]:
        """Summaries, newest first; ``model`` matches exactly, ``target`` any part of the URL."""
        where, params = [], []
        if model is not None:
            where.append("model = ?")
            params.append(model)
        if target is not None:
            where.append("instr(target, ?) > 0")
            params.append(target)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" {_ORDER} LIMIT ?"
        rows = self._db.execute(sql, (*params, -1 if limit is None else limit)).fetchall()
        return [RunSummary(*row) for row in rows]

    def resolve(self, ref: str) -> str:
        """The full id that ``ref`` names; NotFound when it names no run or several."""
        latest = _LATEST.fullmatch(ref)
        if latest:
            back = int(latest.group(1) or 0)
            row = self._db.execute(f"SELECT id FROM runs {_ORDER} LIMIT 1 OFFSET ?", (back,))
            found = row.fetchone()
            if found is None:
                total = self._db.execute("SELECT count(*) FROM runs").fetchone()[0]
                raise NotFound(f"no run '{ref}': the database holds {total} run(s)")
            return str(found[0])
        if self._db.execute("SELECT 1 FROM runs WHERE id = ?", (ref,)).fetchone():
            return ref
        if len(ref) < MIN_PREFIX:
            raise NotFound(
                f"no run '{ref}': give a full id, at least {MIN_PREFIX} of its first "
                "characters, 'latest' or 'latest~N'"
            )
        rows = self._db.execute(
            f"SELECT id, created, model FROM runs WHERE substr(id, 1, ?) = ? {_ORDER}",
            (len(ref), ref),
        ).fetchall()
        if not rows:
            raise NotFound(f"no run '{ref}' (see 'mserve results list')")
        if len(rows) > 1:
            candidates = "; ".join(f"{i} ({c}, {m or 'no model'})" for i, c, m in rows)
            raise NotFound(f"run '{ref}' is ambiguous, {len(rows)} ids start so: {candidates}")
        return str(rows[0][0])

    def get(self, ref: str) -> dict[str, Any]:
        """The result document of the run ``ref`` names (see ``resolve``)."""
        run_id = self.resolve(ref)
        row = self._db.execute("SELECT document FROM runs WHERE id = ?", (run_id,)).fetchone()
        doc: dict[str, Any] = json.loads(row[0])
        return doc

    def delete(self, refs: Iterable[str]) -> int:
        """Delete the runs named (all or none: every ref is resolved first); returns how many."""
        ids = {self.resolve(ref) for ref in refs}
        with self._db:
            self._db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def location_path(location: str | Path) -> Path:
    """The file a location names: a path, or a ``sqlite:///PATH`` URL (``sqlite:////abs`` for
    an absolute path, as SQLAlchemy spells it); ConfigError for any other scheme."""
    if isinstance(location, Path):
        return location
    url = _URL.fullmatch(location)
    if url is None:
        return Path(location)
    scheme, rest = url.groups()
    if scheme.lower() != "sqlite":
        raise ConfigError(
            location, "scheme", "a path or a sqlite:///PATH URL (only SQLite is supported)", scheme
        )
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(location, "path", "a file after the third slash: sqlite:///PATH")
    return Path(rest[1:])


def open_store(location: str | Path) -> ResultStore:
    """The store at a path or ``sqlite:///PATH`` URL (see ``location_path``)."""
    return ResultStore(location_path(location))


def default_location(environ: Mapping[str, str], home: Path) -> Path:
    """Where the database lives unless told: ``$MSERVE_RESULTS_DB`` (a path or sqlite URL),
    else ``$XDG_DATA_HOME/mserve/results.db`` (when absolute), else
    ``home/.local/share/mserve/results.db``."""
    if environ.get("MSERVE_RESULTS_DB"):
        return location_path(environ["MSERVE_RESULTS_DB"])
    data_home = environ.get("XDG_DATA_HOME", "")
    if data_home and Path(data_home).is_absolute():
        return Path(data_home) / "mserve" / "results.db"
    return home / ".local" / "share" / "mserve" / "results.db"
