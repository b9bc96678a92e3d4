"""Hot reload through a real server: ``--poll-interval`` picking up new versions, changed files,
broken versions and removed folders while requests keep flowing, the load API as a transaction,
and an unloaded model's memory given back. Every wait is bounded; no assert is on timing."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mserve.config import DynamicBatching, ModelConfig, VersionPolicy

pytestmark = pytest.mark.integration

POLL = ["--poll-interval", "0.2", "--enable-management"]
WAIT_S = 30.0  # the longest any state change may take before the test fails


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll ``check`` until it holds; fail the test (not on timing: on a hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not so after {timeout} s")
        time.sleep(0.05)


def infer_body(x: float) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 1], "data": [x]}]}
    ).encode()


def infer(conn: http.client.HTTPConnection, model: str, x: float = 0.0) -> tuple[int, Any]:
    """One V2 JSON request on a kept-alive connection: (status, OUTPUT's value or the error)."""
    conn.request("POST", f"/v2/models/{model}/infer", infer_body(x))
    reply = conn.getresponse()
    doc = json.loads(reply.read())
    if reply.status != 200:
        return reply.status, doc.get("error")
    return 200, doc["outputs"][0]["data"][0]


def index(served: Any) -> dict[str, list[dict[str, Any]]]:
    """The repository index, entries by model name."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in served.request("POST", "/v2/repository/index", "").json():
        rows.setdefault(row["name"], []).append(row)
    return rows


def counter(served: Any, name: str, model: str) -> float:
    """A model's counter from /metrics (0 while it has no sample)."""
    text = served.request("GET", "/metrics").body.decode()
    m = re.search(rf'^{name}{{model="{re.escape(model)}"}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def add_version(folder: Path, version: int, model: bytes) -> None:
    """A new version folder that appears whole: written under a hidden name, then renamed."""
    staging = folder / f".staging-{version}"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(model)
    staging.rename(folder / str(version))


def replace_file(path: Path, content: bytes) -> None:
    """Swap a file's content atomically, as a deployment tool should."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


@dataclass
class Load:
    """Threads sending requests back to back, each on its own kept-alive connection, recording
    the answers in order, until stopped."""

    served: Any
    model: str
    threads: int = 4
    answers: list[list[float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _run(self, i: int) -> None:
        conn = self.served.connection()
        mine = self.answers[i]
        try:
            while not self.stop.is_set():
                try:
                    status, value = infer(conn, self.model)
                except (OSError, http.client.HTTPException) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = self.served.connection()
                    continue
                if status != 200:
                    self.failures.append(f"{status}: {value}")
                else:
                    mine.append(value)
        finally:
            conn.close()

    def __enter__(self) -> Load:
        self.answers = [[] for _ in range(self.threads)]
        self._pool = ThreadPoolExecutor(self.threads)
        self._futures = [self._pool.submit(self._run, i) for i in range(self.threads)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for f in self._futures:
            f.result(timeout=WAIT_S)
        self._pool.shutdown()

    def latest(self) -> set[float]:
        """The last answer of each thread so far."""
        return {a[-1] for a in self.answers if a}

    def count(self) -> int:
        return sum(len(a) for a in self.answers)

    def started(self) -> None:
        """Wait until every thread has an answer."""
        wait_for("an answer on every thread", lambda: all(self.answers) or bool(self.failures))

    def more(self, n: int) -> None:
        """Wait until ``n`` more requests were answered."""
        target = self.count() + n
        wait_for(f"{n} more answers", lambda: self.count() >= target or bool(self.failures))


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig("hot"),  # the default policy: the latest version serves
        ModelConfig("hot", max_batch_size=8, dynamic_batching=DynamicBatching(100)),
    ],
    ids=["unbatched", "dynamic-batching"],
)
def test_hot_reload_under_load_switches_versions_without_a_failed_request(
    tmp_path: Path, onnx_factory: Any, place: Any, start_server: Any, config: ModelConfig
) -> None:
    place(tmp_path, "hot", {1: onnx_factory.add_const(1.0)}, config=config)
    served = start_server(tmp_path, POLL)
    folder = tmp_path / "hot"
    reloads_before = counter(served, "mserve_model_reloads_total", "hot")

    with Load(served, "hot") as load:
        load.started()
        load.more(300)
        assert load.latest() == {1.0}

        # a new version folder: polling loads it, warms it up, then switches it in
        add_version(folder, 2, onnx_factory.add_const(2.0))
        wait_for("every thread answered by version 2", lambda: load.latest() == {2.0})
        load.more(300)

        # the file of the serving version replaced, then reloaded through the load API: once
        # the call returns, the new file answers
        replace_file(folder / "2" / "model.onnx", onnx_factory.add_const(3.0))
        reply = served.request("POST", "/v2/repository/models/hot/load", "")
        assert reply.status == 200, reply.body
        with closing(served.connection()) as conn:
            assert infer(conn, "hot") == (200, 3.0)
        wait_for("every thread answered by the new file", lambda: load.latest() == {3.0})
        load.more(300)

    assert load.failures == []
    for answers in load.answers:  # each thread saw 1, then 2, then 3: never an old one again
        assert answers == sorted(answers)
        assert {1.0, 2.0, 3.0} >= set(answers)
        assert answers[0] == 1.0
        assert answers[-1] == 3.0
    assert {2.0} <= {a for answers in load.answers for a in answers}
    # the poll and the load call each switched new versions in (the poll may also reload the
    # replaced file after the call did)
    assert counter(served, "mserve_model_reloads_total", "hot") >= reloads_before + 2
    assert counter(served, "mserve_model_load_failures_total", "hot") == 0
    (entry,) = index(served)["hot"]
    assert (entry["version"], entry["state"], entry["reason"]) == ("2", "READY", "")


def test_versions_whose_files_did_not_change_are_kept_as_loaded(
    tmp_path: Path, onnx_factory: Any, place: Any, start_server: Any
) -> None:
    config = ModelConfig("kept", version_policy=VersionPolicy("all"))
    place(tmp_path, "kept", {1: onnx_factory.add_const(1.0)}, config=config)
    served = start_server(tmp_path, POLL)
    with closing(served.connection()) as conn:
        for _ in range(3):
            assert infer(conn, "kept") == (200, 1.0)

    add_version(tmp_path / "kept", 2, onnx_factory.add_const(2.0))
    wait_for("version 2 loaded", lambda: len(index(served)["kept"]) == 2)

    # version 1 kept its loaded object, so its statistics go on; version 2 starts afresh
    stats = served.request("GET", "/v2/models/kept/stats").json()["model_stats"]
    assert {s["version"]: s["inference_count"] for s in stats} == {"1": 3, "2": 0}


def test_a_broken_new_version_leaves_the_old_one_serving(
    tmp_path: Path, onnx_factory: Any, place: Any, start_server: Any
) -> None:
    place(tmp_path, "guarded", {1: onnx_factory.add_const(1.0)}, config=ModelConfig("guarded"))
    place(tmp_path, "other", {1: onnx_factory.add_const(7.0)})
    served = start_server(tmp_path, POLL)
    folder = tmp_path / "guarded"
    broken = folder / "2" / "model.onnx"

    with Load(served, "guarded", threads=2) as load:
        load.started()
        load.more(20)
        add_version(folder, 2, b"this is not an ONNX model")
        wait_for(
            "the failed reload in the index",
            lambda: "reload failed" in index(served)["guarded"][0]["reason"],
        )
        load.more(20)
    assert load.failures == []
    assert {a for answers in load.answers for a in answers} == {1.0}

    (entry,) = index(served)["guarded"]
    assert (entry["version"], entry["state"]) == ("1", "READY")
    assert entry["reason"].startswith("reload failed, version(s) 1 still serving: ")
    assert f"{broken}: ONNX Runtime cannot load the model" in entry["reason"]
    assert counter(served, "mserve_model_load_failures_total", "guarded") == 1
    log = served.process.log()
    assert f"model guarded: reload failed, version(s) 1 still serving: {broken}" in log

    # unchanged files are not tried again, however many polls go by
    time.sleep(1.0)  # five polls
    assert counter(served, "mserve_model_load_failures_total", "guarded") == 1
    assert log.count(str(broken)) == served.process.log().count(str(broken))

    # the broken version removed: the next poll reloads, keeping version 1 as loaded
    shutil.rmtree(folder / "2")
    wait_for("the index clear again", lambda: index(served)["guarded"][0]["reason"] == "")
    assert counter(served, "mserve_model_reloads_total", "guarded") == 1

    # a broken config.yaml: the same, naming the file and the field
    (folder / "config.yaml").write_text("max_batch_size: lots\n")
    wait_for(
        "the broken config in the index",
        lambda: "max_batch_size" in index(served)["guarded"][0]["reason"],
    )
    (entry,) = index(served)["guarded"]
    assert (entry["version"], entry["state"]) == ("1", "READY")
    assert (
        f"{folder / 'config.yaml'}: field 'max_batch_size': expected an integer >= 0, got 'lots'"
        in entry["reason"]
    )
    assert counter(served, "mserve_model_load_failures_total", "guarded") == 2
    with closing(served.connection()) as conn:
        assert infer(conn, "guarded") == (200, 1.0)
        assert infer(conn, "other") == (200, 7.0)


def test_a_removed_folder_is_unloaded_and_loads_again_when_it_returns(
    tmp_path: Path, onnx_factory: Any, place: Any, start_server: Any
) -> None:
    repo = tmp_path / "repo"
    place(repo, "transient", {1: onnx_factory.add_const(5.0)})
    place(repo, "stays", {1: onnx_factory.add_const(7.0)})
    served = start_server(repo, POLL)
    with closing(served.connection()) as conn:
        assert infer(conn, "transient") == (200, 5.0)

    shutil.move(repo / "transient", tmp_path / "outside")
    wait_for("the folder's model unloaded", lambda: not _ready(served, "transient"))
    (entry,) = index(served)["transient"]
    assert (entry["state"], entry["reason"]) == (
        "UNAVAILABLE",
        "unloaded: its folder was removed from the repository",
    )
    with closing(served.connection()) as conn:
        status, error = infer(conn, "transient")
        assert status == 503
        assert "its folder was removed from the repository" in error
        assert infer(conn, "stays") == (200, 7.0)

    shutil.move(tmp_path / "outside", repo / "transient")
    wait_for("the folder's model loaded again", lambda: _ready(served, "transient"))
    with closing(served.connection()) as conn:
        assert infer(conn, "transient") == (200, 5.0)

    # a folder that was never there: loaded by the next polls
    place(repo, "newcomer", {3: onnx_factory.add_const(9.0)})
    wait_for("the new folder's model loaded", lambda: _ready(served, "newcomer"))
    with closing(served.connection()) as conn:
        assert infer(conn, "newcomer") == (200, 9.0)
    assert served.request("GET", "/v2/models/newcomer").json()["versions"] == ["3"]


def test_each_worker_polls_and_reloads_on_its_own(
    tmp_path: Path, onnx_factory: Any, place: Any, start_server: Any
) -> None:
    place(tmp_path, "shared", {1: onnx_factory.add_const(1.0)})
    served = start_server(tmp_path, ["--workers", "2", *POLL])

    def workers() -> float:
        text = served.request("GET", "/metrics").body.decode()
        m = re.search(r"^mserve_workers (\S+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    wait_for("both workers publishing their metrics", lambda: workers() == 2)
    add_version(tmp_path / "shared", 2, onnx_factory.add_const(2.0))
    # the counter is summed over the workers: 2 once each has switched
    wait_for(
        "both workers reloaded",
        lambda: counter(served, "mserve_model_reloads_total", "shared") == 2,
    )
    for _ in range(20):  # a new connection each time: the kernel spreads them over workers
        with closing(served.connection()) as conn:
            assert infer(conn, "shared") == (200, 2.0)


def _ready(served: Any, model: str) -> bool:
    return bool(served.request("GET", f"/v2/models/{model}/ready").status == 200)


def test_without_polling_nothing_changes_on_its_own(
    tmp_path: Path, onnx_factory: Any, place: Any, start_server: Any
) -> None:
    place(tmp_path, "still", {1: onnx_factory.add_const(1.0)})
    served = start_server(tmp_path, ["--enable-management"])
    add_version(tmp_path / "still", 2, onnx_factory.add_const(2.0))
    time.sleep(0.5)
    with closing(served.connection()) as conn:
        assert infer(conn, "still") == (200, 1.0)
    assert served.request("POST", "/v2/repository/models/still/load", "").status == 200
    with closing(served.connection()) as conn:
        assert infer(conn, "still") == (200, 2.0)


def big_mlp(widths: tuple[int, ...]) -> bytes:
    """INPUT -> MatMul + Relu layers -> OUTPUT (FP32) with random weights: a model of some
    size, built fast (numpy_helper, not a Python list per tensor)."""
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "INPUT"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        w = rng.standard_normal((n_in, n_out), dtype=np.float32) / np.float32(np.sqrt(n_in))
        weights.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"M{i}"]))
        x = f"H{i}" if i < len(widths) - 2 else "OUTPUT"
        nodes.append(helper.make_node("Relu", [f"M{i}"], [x]))
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["n", widths[0]])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["n", widths[-1]])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_an_unloaded_model_gives_its_memory_back(
    tmp_path: Path, onnx_factory: Any, place: Any, start_server: Any
) -> None:
    big = big_mlp((256, 2048, 4096, 256))  # 44 MB of FP32 weights
    place(tmp_path, "small", {1: onnx_factory.add_const(1.0)})
    served = start_server(tmp_path, ["--enable-management"])
    place(tmp_path, "big", {1: big})
    pid = served.process.proc.pid

    def settled() -> float:  # runtimes close on a background thread after the unload returns
        time.sleep(0.5)
        return _rss_mb(pid)

    before = settled()
    figures = []
    for _ in range(3):
        assert served.request("POST", "/v2/repository/models/big/load", "").status == 200
        loaded = settled()
        assert served.request("POST", "/v2/repository/models/big/unload", "").status == 200
        unloaded = settled()
        figures.append((loaded - before, unloaded - before))
    for grew, kept in figures:
        assert grew > len(big) / 2**20 * 0.8, figures  # the weights were really resident
        assert kept < grew / 2, figures  # and most of them left with the model
