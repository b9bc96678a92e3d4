"""The results database: saving, naming runs by id, prefix and ``latest~N``, listing, deleting,
and where the database lives."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mserve.bench.histogram import Histogram
from mserve.bench.result import SCHEMA, Settings, new_result
from mserve.bench.stats import summarize
from mserve.bench.store import ResultStore, default_location, location_path, open_store
from mserve.errors import ConfigError, NotFound


def step(
    concurrency: int, latency_us: int, ok: int = 1000, invalid: bool = False
) -> dict[str, Any]:
    """A closed-loop step as summarize_step writes it: ``ok`` requests in 1 s, the slowest 1%
    taking 3x ``latency_us``."""
    h = Histogram()
    h.record(latency_us, ok - ok // 100)
    h.record(3 * latency_us, ok // 100)
    errors = {"http_503": 2} if invalid else {}
    return {
        "load": {"mode": "closed", "concurrency": concurrency},
        "duration_s": 1.0,
        "windows": 2,
        "stable": None,
        **summarize(h, ok, errors, 1.0),
        "inferences_per_s": float(ok),
        "histogram": h.to_dict(),
        "verdict": "INVALID" if invalid else "VALID",
        "reasons": ["not stable"] if invalid else [],
    }


def result(
    run_id: str,
    created: str,
    model: str = "digits",
    url: str = "http://127.0.0.1:8000",
    steps: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A result document as ``mserve bench`` writes it, with a chosen id and time."""
    target = {"protocol": "v2-json", "url": url, "model": model, "version": None}
    doc = new_result(target, Settings(duration_s=1.0), ["bench", url, "-m", model])
    doc.update(id=run_id, created=created)
    doc["steps"] = steps if steps is not None else [step(1, 500)]
    return doc


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    with ResultStore(tmp_path / "results.db") as s:
        yield s


def three_runs(store: ResultStore) -> list[str]:
    """Saves three runs, oldest first, and returns their ids."""
    ids = ["aaaa11110000", "aaaa22220000", "bbbb33330000"]
    for i, run_id in enumerate(ids):
        store.save(result(run_id, f"2025-01-0{i + 1}T10:00:00Z", model=f"m{i % 2}"))
    return ids


def test_a_saved_document_comes_back_unchanged(store: ResultStore) -> None:
    doc = result("0123456789ab", "2025-01-01T10:00:00Z", steps=[step(1, 500), step(4, 900)])
    assert store.save(doc) == "0123456789ab"
    assert store.get("0123456789ab") == doc
    assert doc["schema"] == SCHEMA


def test_the_summary_is_pulled_from_the_document(store: ResultStore) -> None:
    steps = [step(1, 500, ok=1000), step(4, 800, ok=3000), step(16, 4000, ok=2000, invalid=True)]
    doc = result("0123456789ab", "2025-01-01T10:00:00Z", steps=steps)
    store.save(doc)
    (run,) = store.list()
    assert run.to_dict() == {
        "id": "0123456789ab",
        "created": "2025-01-01T10:00:00Z",
        "command": "bench http://127.0.0.1:8000 -m digits",
        "target": "http://127.0.0.1:8000",
        "protocol": "v2-json",
        "model": "digits",
        "mserve_version": doc["machine"]["mserve"],
        "host": doc["machine"]["hostname"],
        "steps": 3,
        "best_throughput_rps": 3000.0,
        "p99_ms": steps[1]["latency_ms"]["p99"],  # at the best step, not the last
        "valid": 2,
        "invalid": 1,
        "errors": 2,
    }


def test_list_is_newest_first_and_filters(store: ResultStore) -> None:
    ids = three_runs(store)
    store.save(result("cccc44440000", "2025-01-04T10:00:00Z", url="http://10.0.0.2:9000"))
    assert [r.id for r in store.list()] == ["cccc44440000", *reversed(ids)]
    assert [r.id for r in store.list(limit=2)] == ["cccc44440000", ids[2]]
    assert [r.id for r in store.list(model="m0")] == [ids[2], ids[0]]
    assert [r.id for r in store.list(target="10.0.0.2")] == ["cccc44440000"]
    assert store.list(model="m1", target="10.0.0.2") == []


def test_runs_of_the_same_second_are_ordered_by_saving(store: ResultStore) -> None:
    for run_id in ("ffff00000000", "0000ffff0000"):
        store.save(result(run_id, "2025-01-01T10:00:00Z"))
    assert store.resolve("latest") == "0000ffff0000"


def test_a_run_is_named_by_id_prefix_or_latest(store: ResultStore) -> None:
    ids = three_runs(store)
    assert store.get(ids[0])["id"] == ids[0]
    assert store.get("bbbb")["id"] == ids[2]
    assert store.get("aaaa2")["id"] == ids[1]
    assert store.resolve("latest") == ids[2]
    assert store.resolve("latest~0") == ids[2]
    assert store.resolve("latest~2") == ids[0]


def test_unknown_refs_say_why(store: ResultStore) -> None:
    three_runs(store)
    with pytest.raises(NotFound, match=r"^no run 'latest~3': the database holds 3 run\(s\)$"):
        store.get("latest~3")
    with pytest.raises(NotFound, match="no run 'dddd'"):
        store.get("dddd")
    with pytest.raises(NotFound, match="at least 4 of its first characters"):
        store.get("bbb")  # a unique prefix, but too short to be trusted


def test_an_ambiguous_prefix_lists_the_candidates(store: ResultStore) -> None:
    three_runs(store)
    with pytest.raises(NotFound) as info:
        store.get("aaaa")
    assert str(info.value) == (
        "run 'aaaa' is ambiguous, 2 ids start so: "
        "aaaa22220000 (2025-01-02T10:00:00Z, m1); aaaa11110000 (2025-01-01T10:00:00Z, m0)"
    )


def test_saving_the_same_id_replaces_the_run(store: ResultStore) -> None:
    store.save(result("0123456789ab", "2025-01-01T10:00:00Z", steps=[step(1, 500)]))
    again = result("0123456789ab", "2025-01-01T10:00:00Z", steps=[step(1, 500), step(2, 600)])
    store.save(again)
    assert [r.steps for r in store.list()] == [2]
    assert store.get("0123") == again


def test_a_document_without_id_gets_one_from_its_content(store: ResultStore) -> None:
    doc = result("", "2025-01-01T10:00:00Z")
    del doc["id"]
    first = store.save(doc)
    assert store.save(doc) == first
    assert len(first) == 12
    assert store.get(first) == doc
    assert len(store.list()) == 1


def test_delete_is_all_or_none(store: ResultStore) -> None:
    ids = three_runs(store)
    with pytest.raises(NotFound):
        store.delete(["latest", "eeee"])
    assert len(store.list()) == 3
    assert store.delete(["latest", ids[2][:6], "latest~2"]) == 2  # the same run named twice
    assert [r.id for r in store.list()] == [ids[1]]


def test_the_database_persists_and_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "results.db"
    with open_store(path) as store:
        store.save(result("0123456789ab", "2025-01-01T10:00:00Z"))
    with open_store(path) as store:
        assert [r.id for r in store.list()] == ["0123456789ab"]
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
    finally:
        db.close()


def test_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(ConfigError, match="newer than this mserve's"):
        ResultStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.write_text("not a database\n" * 100)
    with pytest.raises(ConfigError, match="expected an mserve results database"):
        ResultStore(path)


def test_only_result_documents_are_saved(store: ResultStore) -> None:
    with pytest.raises(ConfigError, match="field 'schema'"):
        store.save({"schema": "something/1", "steps": []})
    with pytest.raises(ConfigError, match="field 'steps'"):
        store.save({"schema": SCHEMA, "id": "0123456789ab"})


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = tmp_path / "a.db"
    assert location_path(f"sqlite:///{absolute}") == absolute  # sqlite:////abs/a.db
    assert location_path("sqlite:///rel/a.db") == Path("rel/a.db")
    assert location_path("rel/a.db") == Path("rel/a.db")
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///here.db") as store:
        assert store.list() == []
    assert (tmp_path / "here.db").is_file()


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("postgresql://db.example/results", "(only SQLite is supported), got 'postgresql'"),
        ("sqlite://", "sqlite:///PATH"),
        ("sqlite:///", "sqlite:///PATH"),
    ],
)
def test_other_locations_are_refused(location: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        open_store(location)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "/home/u/.local/share/mserve/results.db"),
        ({"XDG_DATA_HOME": "/data"}, "/data/mserve/results.db"),
        ({"XDG_DATA_HOME": "relative"}, "/home/u/.local/share/mserve/results.db"),
        ({"XDG_DATA_HOME": ""}, "/home/u/.local/share/mserve/results.db"),
        ({"MSERVE_RESULTS_DB": "/db/r.db", "XDG_DATA_HOME": "/data"}, "/db/r.db"),
        ({"MSERVE_RESULTS_DB": "sqlite:////db/r.db"}, "/db/r.db"),
        ({"MSERVE_RESULTS_DB": ""}, "/home/u/.local/share/mserve/results.db"),
    ],
)
def test_default_location(environ: dict[str, str], expected: str) -> None:
    assert default_location(environ, Path("/home/u")) == Path(expected)
