"""Real servers on free ports (``mserve serve`` in a subprocess) over repositories of tiny real
models, and the clients that talk to them: tritonclient.http, plain HTTP and headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mserve.config import ModelConfig, VersionPolicy
from mserve.protocol import DATATYPES, TensorSpec
from mserve.server.process import ServerProcess, free_port

#: every model the shared server serves, and what each is for
IDENTITY = {dt: f"identity_{dt.lower()}" for dt in DATATYPES}  # OUTPUT = INPUT, shape [-1, 2]
ADDSUB = ModelConfig(
    name="addsub",
    inputs=(TensorSpec("INPUT0", "FP32", (-1, 4)), TensorSpec("INPUT1", "FP32", (-1, 4))),
    outputs=(TensorSpec("OUTPUT0", "FP32", (-1, 4)), TensorSpec("OUTPUT1", "FP32", (-1, 4))),
    max_batch_size=8,
)
VERSIONED = {  # three versions each; version v computes OUTPUT = INPUT + v
    "versions_latest2": VersionPolicy("latest", 2),
    "versions_all": VersionPolicy("all"),
    "versions_specific": VersionPolicy("specific", specific=(1, 3)),
    "versions_default": None,  # no config.yaml: the latest version only
}
BROKEN_CONFIG = "max_batch_size: lots\n"
SLOW_SERVER = Path(__file__).with_name("slow_server.py")

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; never a browser Playwright downloads
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Reply:
    """A plain HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Served:
    """A running server and what it serves."""

    process: ServerProcess
    repository: Path
    models: dict[str, bytes] = field(default_factory=dict)  # name -> ONNX bytes served

    @property
    def address(self) -> str:
        """host:port, as tritonclient takes it."""
        return f"{self.process.host}:{self.process.port}"

    def connection(self) -> http.client.HTTPConnection:
        """A keep-alive connection to the server (the caller closes it)."""
        return http.client.HTTPConnection(self.process.host, self.process.port, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = self.connection()
        try:
            conn.request(
                method,
                path,
                body=body.encode() if isinstance(body, str) else body,
                headers=headers or {},
            )
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()


StartServer = Callable[..., Served]
RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m mserve ARGS`` as a user runs it, output captured; ``env`` adds variables."""
    return subprocess.run(
        [sys.executable, "-m", "mserve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )


@pytest.fixture(scope="session")
def mserve_cli() -> RunCli:
    """mserve_cli(*args, timeout=120, env=None) -> the finished ``python -m mserve`` process."""
    return run_cli


@pytest.fixture(scope="session")
def start_server() -> Iterator[StartServer]:
    """start_server(repository, args=[...]) -> Served; every server stops at the session's end."""
    started: list[ServerProcess] = []

    def start(repository: Path, args: list[str] | None = None) -> Served:
        process = ServerProcess(repository, args=args)
        started.append(process)
        process.start(timeout=60)
        return Served(process, repository)

    yield start
    for process in started:
        process.stop()
        process.log_path.unlink(missing_ok=True)  # ServerProcess leaves its log file behind


@pytest.fixture(scope="session")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    start_server: StartServer,
    onnx_factory: Any,
    place: Any,
    digits_model: Any,
    iris_model: Any,
) -> Served:
    """The shared server: trained classifiers, an identity model per datatype, a two-input
    model, versioned models under each version policy, and a broken config beside them."""
    root = tmp_path_factory.mktemp("repository")
    models: dict[str, bytes] = {}

    def put(name: str, model: bytes, **kw: Any) -> None:
        place(root, name, {1: model}, **kw)
        models[name] = model

    put("digits", digits_model.onnx, config=digits_model.config)
    put("iris", iris_model.onnx)  # no config.yaml: the signature comes from the model
    for datatype, name in IDENTITY.items():
        put(name, onnx_factory.identity(datatype))
    put("addsub", onnx_factory.add_sub(), config=ADDSUB)
    put("broken", onnx_factory.identity("FP32"), config_text=BROKEN_CONFIG)
    stats_config = ModelConfig("stats_probe", max_batch_size=8)
    put("stats_probe", onnx_factory.identity("FP32"), config=stats_config)
    put("swappable", onnx_factory.add_const(10.0), config=ModelConfig("swappable"))
    for name, policy in VERSIONED.items():
        versions = {v: onnx_factory.add_const(float(v)) for v in (1, 2, 3)}
        config = None if policy is None else ModelConfig(name, version_policy=policy)
        place(root, name, versions, config=config)
    server = start_server(root, args=["--enable-management"])
    server.models = models
    return server


@pytest.fixture
def client(served: Served) -> Iterator[Any]:
    """A tritonclient.http client of the shared server."""
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(served.address)
    yield c
    c.close()


@pytest.fixture
def slow_server() -> Iterator[Any]:
    """slow_server(mode, arg) -> URL of a server whose delays the test chooses."""
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str, arg: float = 0.0) -> str:
        port = free_port()
        p = subprocess.Popen(
            [sys.executable, str(SLOW_SERVER), str(port), mode, str(arg)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        return f"http://127.0.0.1:{port}/"

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)
        if p.stdout is not None:
            p.stdout.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A page of a fresh headless Chromium profile (skips without Chromium or Playwright)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is missing (pip install playwright)"
    )
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def _save_artefact(source: Path) -> None:
    folder = os.environ.get("MSERVE_TEST_ARTEFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, Path(folder) / source.name)


@pytest.fixture(scope="session")
def save_artefact() -> Callable[[Path], None]:
    """save_artefact(path): keep a copy (a screenshot) in $MSERVE_TEST_ARTEFACTS when it is set."""
    return _save_artefact


@dataclass
class PageLog:
    """What a page did: console errors, page errors and failed requests; every URL it asked for."""

    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def page_log(page: Any) -> PageLog:
    """Listens to ``page`` from now on (attach it before the page loads)."""
    log = PageLog()
    page.on("console", lambda m: log.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.problems.append(str(e)))
    page.on("requestfailed", lambda r: log.problems.append(f"failed request {r.url}"))
    page.on("request", lambda r: log.requests.append(r.url))
    return log
