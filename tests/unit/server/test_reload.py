"""Hot reload without sockets: folder signatures, the poll plan, the manager's reload
transaction (kept versions, a failed reload beside serving versions) and the poller, over fake
runtimes whose model files say what they compute."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mserve.config import ModelConfig, VersionPolicy
from mserve.errors import RepositoryError
from mserve.repository import Repository
from mserve.runtime.fake import FakeRuntime
from mserve.server.metrics import ServerMetrics
from mserve.server.models import ModelManager
from mserve.server.reload import (
    REMOVED,
    Action,
    RepositoryPoller,
    Signature,
    plan,
    signature,
    unchanged_versions,
)


def fake_factory(backend: str, path: Path, config: ModelConfig) -> FakeRuntime:
    """A model file holds its scale ("3"), or "fail" for a model whose warm-up (on zeros)
    fails."""
    text = path.read_text()
    if text == "fail":
        return FakeRuntime(fail_when=0.0)
    return FakeRuntime(scale=float(text))


def put(root: Path, name: str, version: int, content: str, mtime_ns: int | None = None) -> Path:
    path = root / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def manager(root: Path) -> ModelManager:
    return ModelManager(Repository(root), fake_factory, metrics=ServerMetrics())


def counter(m: ModelManager, family: str, model: str) -> float:
    fam = m.metrics.registry.families[family]
    return float(fam.labels(model).value)


# -- signatures and the plan (pure) -------------------------------------------------------------


def test_a_signature_groups_files_by_version_and_skips_hidden_ones(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, "1", mtime_ns=10**18)
    put(tmp_path, "m", 2, "22", mtime_ns=2 * 10**18)
    (tmp_path / "m" / "config.yaml").write_text("max_batch_size: 0\n")
    (tmp_path / "m" / ".config.yaml.swp").write_text("an editor's")
    (tmp_path / "m" / "01").mkdir()  # not a version folder: "01" is not how 1 is written
    (tmp_path / "m" / "01" / "model.onnx").write_text("x")
    sig = signature(tmp_path / "m")
    assert sorted(sig.versions) == ["1", "2"]
    assert sig.versions["2"] == (("2/model.onnx", 2, 2 * 10**18),)
    assert [f[0] for f in sig.shared] == ["01/model.onnx", "config.yaml"]
    assert signature(tmp_path / "m") == sig  # nothing changed, the same signature
    put(tmp_path, "m", 2, "23", mtime_ns=2 * 10**18)  # same size and time: not seen, as rsync
    assert signature(tmp_path / "m") == sig
    put(tmp_path, "m", 2, "23")
    assert signature(tmp_path / "m") != sig


def test_unchanged_versions_need_the_shared_files_unchanged_too() -> None:
    a = ("1/model.onnx", 1, 1)
    b = ("2/model.onnx", 1, 1)
    cfg = (("config.yaml", 5, 1),)
    loaded = Signature(cfg, {"1": (a,), "2": (b,)})
    assert unchanged_versions(loaded, Signature(cfg, {"1": (a,), "2": (b,)})) == {1, 2}
    assert unchanged_versions(loaded, Signature(cfg, {"1": (a,), "3": (b,)})) == {1}
    assert unchanged_versions(loaded, Signature((), {"1": (a,)})) == set()
    assert unchanged_versions(None, loaded) == set()


def test_plan_waits_for_a_folder_to_settle_and_does_not_retry_a_failure() -> None:
    s1 = Signature((("config.yaml", 1, 1),), {"1": (("1/model.onnx", 1, 1),)})
    s2 = Signature(s1.shared, {**s1.versions, "2": (("2/model.onnx", 1, 2),)})
    # a new folder: seen once, then loaded when it looks the same on the next poll
    assert plan({}, {}, {}, {"m": s1}) == []
    assert plan({}, {}, {"m": s1}, {"m": s1}) == [Action("load", "m")]
    # a new version: reloaded keeping version 1 as loaded
    assert plan({"m": s1}, {"m": s1}, {"m": s2}, {"m": s2}) == [Action("load", "m", frozenset({1}))]
    # still being written: wait
    assert plan({"m": s1}, {"m": s1}, {"m": s1}, {"m": s2}) == []
    # tried at these files already (and failed: loaded is older): nothing until they change
    assert plan({"m": s2}, {"m": s1}, {"m": s2}, {"m": s2}) == []
    # gone: unloaded once it is gone on two polls in a row
    assert plan({"m": s1}, {"m": s1}, {"m": s1}, {}) == []
    assert plan({"m": s1}, {"m": s1}, {}, {}) == [Action("unload", "m")]
    assert plan({}, {}, {}, {}) == []


# -- the manager's transaction --------------------------------------------------------------


def test_a_reload_keeps_unchanged_versions_and_closes_replaced_ones(tmp_path: Path) -> None:
    config = ModelConfig("m", version_policy=VersionPolicy("all"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text("version_policy: all\n")
    put(tmp_path, "m", 1, "1")
    put(tmp_path, "m", 2, "2")
    m = manager(tmp_path)
    m.load("m")
    v1, v2 = m.get("m", "1"), m.get("m", "2")
    put(tmp_path, "m", 2, "20")
    m.load("m", keep={1})
    assert m.get("m", "1") is v1  # kept as loaded
    assert m.get("m", "2") is not v2
    assert m.get("m", "2").config.name == config.name
    assert counter(m, "mserve_model_reloads_total", "m") == 1
    m.close()


def test_a_failed_reload_leaves_the_old_versions_serving_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(tmp_path, "m", 1, "3")
    m = manager(tmp_path)
    m.load("m")
    old = m.get("m")
    broken = put(tmp_path, "m", 2, "fail")  # the latest version: its warm-up fails
    with pytest.raises(RepositoryError, match="warm-up run failed"):
        m.load("m")
    assert m.get("m") is old
    (row,) = m.index()
    assert (row.version, row.state) == ("1", "READY")
    assert row.reason.startswith("reload failed, version(s) 1 still serving: ")
    assert f"{broken}: warm-up run failed: RuntimeError: fake failure on value 0.0" in row.reason
    assert counter(m, "mserve_model_load_failures_total", "m") == 1
    assert counter(m, "mserve_model_reloads_total", "m") == 0
    assert any(
        r.levelname == "ERROR" and "model m: reload failed" in r.getMessage()
        for r in caplog.records
    )
    put(tmp_path, "m", 2, "4")
    m.load("m")
    (row,) = m.index()
    assert (row.version, row.state, row.reason) == ("2", "READY", "")
    m.close()


# -- the poller ------------------------------------------------------------------------------


def test_the_poller_loads_reloads_and_unloads_as_folders_change(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, "2")
    m = manager(tmp_path)
    m.load_all()
    poller = RepositoryPoller(m)

    async def polls(n: int) -> list[Action]:
        done: list[Action] = []
        for _ in range(n):
            done.extend(await poller.poll())
        return done

    async def scenario() -> None:
        poller.start()
        assert await polls(2) == []  # nothing changed
        put(tmp_path, "m", 2, "fail")
        one = frozenset({1})  # unchanged: kept if the version policy still selects it
        assert await polls(2) == [Action("load", "m", one)]
        assert m.get("m").version == "1"
        assert await polls(3) == []  # the broken version is not tried again
        put(tmp_path, "m", 2, "5")
        assert await polls(2) == [Action("load", "m", one)]
        assert m.get("m").version == "2"
        put(tmp_path, "n", 1, "7")
        assert await polls(2) == [Action("load", "n")]
        assert m.is_ready("n")
        for f in (tmp_path / "n" / "1").iterdir():
            f.unlink()
        (tmp_path / "n" / "1").rmdir()
        (tmp_path / "n").rmdir()
        assert await polls(2) == [Action("unload", "n")]
        await asyncio.sleep(0)  # the versions close on the loop

    asyncio.run(scenario())
    rows = {r.name: r for r in m.index()}
    assert (rows["n"].state, rows["n"].reason) == ("UNAVAILABLE", REMOVED)
    assert counter(m, "mserve_model_load_failures_total", "m") == 1
    assert counter(m, "mserve_model_reloads_total", "m") == 1
    m.close()


def test_the_poller_compares_with_what_each_load_read(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, "2")
    m = manager(tmp_path)
    m.load_all()
    put(tmp_path, "m", 2, "3")  # after the start-up load, before the poller's first look
    poller = RepositoryPoller(m)

    async def scenario() -> list[list[Action]]:
        poller.start()
        first = await poller.poll()
        put(tmp_path, "m", 2, "30")
        m.load("m")  # as the load API does: the poller has nothing left to do
        return [first, await poller.poll(), await poller.poll()]

    assert asyncio.run(scenario()) == [[Action("load", "m", frozenset({1}))], [], []]
    assert m.get("m").version == "2"
    assert counter(m, "mserve_model_reloads_total", "m") == 2
    m.close()
