"""``mserve results`` over a database holding a real ``mserve bench`` run of the shared server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from mserve.bench.store import open_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bench_file(served: Any, mserve_cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The result file of a short real run against the shared server's digits model."""
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "result.json"
    proc = mserve_cli(
        "bench",
        f"http://{served.address}",
        "-m",
        "digits",
        "--concurrency",
        "1",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--window",
        "0.5",
        "-q",
        "-o",
        str(out),
        env={"MSERVE_RESULTS_DB": str(folder / "bench.db")},  # never the user's own database
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def db(bench_file: Path, tmp_path: Path) -> Path:
    """A fresh database holding the run."""
    path = tmp_path / "r.db"
    with open_store(path) as store:
        store.save(json.loads(bench_file.read_text()))
    return path


def results(mserve_cli: Any, db: Path, *args: str) -> Any:
    return mserve_cli("results", "--db", str(db), *args)


def test_list_json(db: Path, bench_file: Path, mserve_cli: Any) -> None:
    doc = json.loads(bench_file.read_text())
    proc = results(mserve_cli, db, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert listing["database"] == str(db)
    (run,) = listing["runs"]
    assert run["id"] == doc["id"]
    assert run["model"] == "digits"
    assert run["target"] == doc["target"]["url"]
    assert run["steps"] == 1
    assert run["best_throughput_rps"] == doc["steps"][0]["throughput_rps"] > 0
    assert run["valid"] + run["invalid"] == 1
    assert (
        json.loads(results(mserve_cli, db, "list", "--model", "iris", "--json").stdout)["runs"]
        == []
    )


def test_show_prints_the_steps_and_the_stored_document(
    db: Path, bench_file: Path, mserve_cli: Any
) -> None:
    doc = json.loads(bench_file.read_text())
    proc = results(mserve_cli, db, "show", doc["id"][:6])
    assert proc.returncode == 0, proc.stderr
    assert f"run {doc['id']}" in proc.stdout
    assert "p99 ms (95% CI)" in proc.stdout
    assert "c=1" in proc.stdout
    assert doc["steps"][0]["verdict"] in proc.stdout
    as_json = results(mserve_cli, db, "show", "latest", "--json")
    assert as_json.stdout == bench_file.read_text()  # byte for byte what bench -o wrote


def test_export_csv_has_a_row_per_step(
    db: Path, bench_file: Path, mserve_cli: Any, tmp_path: Path
) -> None:
    doc = json.loads(bench_file.read_text())
    out = tmp_path / "export" / "runs.csv"
    proc = results(mserve_cli, db, "export", "latest", "--format", "csv", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    (row,) = csv.DictReader(io.StringIO(out.read_text()))
    step = doc["steps"][0]
    assert row["run_id"] == doc["id"]
    assert row["model"] == "digits"
    assert (row["mode"], row["concurrency"]) == ("closed", "1")
    assert float(row["throughput_rps"]) == step["throughput_rps"]
    assert float(row["p99_ms"]) == step["latency_ms"]["p99"]
    assert [float(row["p99_ci_lo_ms"]), float(row["p99_ci_hi_ms"])] == step["latency_ci_ms"]["p99"]
    assert row["verdict"] == step["verdict"]
    exported = results(mserve_cli, db, "export", doc["id"])
    assert json.loads(exported.stdout) == doc


def test_delete_needs_yes_when_nobody_can_be_asked(db: Path, mserve_cli: Any) -> None:
    refused = results(mserve_cli, db, "delete", "latest")
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert len(json.loads(results(mserve_cli, db, "list", "--json").stdout)["runs"]) == 1
    deleted = results(mserve_cli, db, "delete", "latest", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith("deleted 1 run(s)")
    assert json.loads(results(mserve_cli, db, "list", "--json").stdout)["runs"] == []
    gone = results(mserve_cli, db, "show", "latest")
    assert gone.returncode == 4
    assert gone.stderr.strip() == "mserve: error: no run 'latest': the database holds 0 run(s)"


def test_an_unknown_run_is_not_found(db: Path, mserve_cli: Any) -> None:
    proc = results(mserve_cli, db, "show", "ffffffff")
    assert proc.returncode == 4
    assert proc.stderr.strip() == "mserve: error: no run 'ffffffff' (see 'mserve results list')"


def test_only_sqlite_databases(mserve_cli: Any) -> None:
    proc = mserve_cli("results", "--db", "postgresql://db.example/results", "list")
    assert proc.returncode == 3
    assert "only SQLite is supported" in proc.stderr


def test_help_says_where_the_database_lives(mserve_cli: Any) -> None:
    proc = mserve_cli("results", "--help")
    assert proc.returncode == 0
    for text in ("--db", "MSERVE_RESULTS_DB", ".local/share/mserve/results.db", "latest~N"):
        assert text in proc.stdout
