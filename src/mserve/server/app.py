"""The composition root: builds repository, models, data plane and transports, and serves them.

``serve`` binds the listening socket once; with ``workers > 1`` it starts that many processes
(spawned, so no ONNX Runtime state crosses a fork) that share the socket, and restarts a worker
that dies. Each worker loads the models itself, records its own metrics and publishes them to a
private directory, so that any worker can answer ``/metrics`` for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mserve.config import ServerSettings
from mserve.errors import ConfigError, MserveError, Unavailable
from mserve.repository import Repository
from mserve.server.auth import ApiKeys, load_keys
from mserve.server.dashboard import History
from mserve.server.dataplane import DataPlane
from mserve.server.http.app import HttpApp, MetricsPortApp
from mserve.server.http.protocol import Connections, HttpServerProtocol
from mserve.server.load import InFlight
from mserve.server.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Exchange, ServerMetrics
from mserve.server.models import ModelManager, RuntimeFactory, default_runtime_factory

log = logging.getLogger("mserve.server")

Announce = Callable[[str], None]


@dataclass(slots=True)
class Server:
    """Everything one worker process serves."""

    dataplane: DataPlane
    http: HttpApp
    in_flight: InFlight  # counted by the transports, read by the models
    history: History  # the dashboard's last minutes
    keys: ApiKeys  # API keys and their scopes (none: an open server)


def build(
    repository: Path,
    settings: ServerSettings,
    runtime_factory: RuntimeFactory = default_runtime_factory,
) -> Server:
    """Load every model of the repository and wire the transports to one data plane."""
    in_flight = InFlight()
    metrics = ServerMetrics()
    models = ModelManager(Repository(repository), runtime_factory, in_flight, metrics)
    metrics.registry.on_collect(models.collect_metrics)
    metrics.registry.on_collect(lambda: metrics.in_flight.set(in_flight.count))
    exchange = Exchange(Path(settings.metrics_dir)) if settings.metrics_dir else None
    # a bad key file stops the server before any loading
    keys = load_keys(settings.api_keys, settings.api_keys_env)
    models.load_all()
    dataplane = DataPlane(
        models,
        exchange=exchange,
        management=settings.management,
        max_tensor_elements=settings.max_tensor_elements,
        request_timeout_s=settings.request_timeout_s,
    )
    dataplane.set_ready(True)
    history = History(LATENCY_BUCKETS, BATCH_BUCKETS)
    http = HttpApp(
        dataplane,
        max_body_bytes=settings.max_body_bytes,
        history=history,
        workers=settings.workers,
        keys=keys,
    )
    return Server(dataplane, http, in_flight, history, keys)


#: a TLS handshake not done by then is dropped (a connection counts against --max-connections
#: only once its handshake is done)
TLS_HANDSHAKE_S = 10.0


def tls_context(settings: ServerSettings, alpn: list[str]) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 or later) when a certificate is set, offering ``alpn``;
    ConfigError for a half-given pair or files that do not load."""
    cert, key = settings.tls_cert, settings.tls_key
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise ConfigError("command line", missing, f"a file, since {given} is given", "none")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc.filename), "tls", "an existing PEM file", "none") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{cert} / {key}",
            "tls",
            "a PEM certificate chain and its matching private key (unencrypted)",
            getattr(exc, "reason", None) or str(exc),
        ) from None
    ctx.set_alpn_protocols(alpn)
    return ctx


async def _sample_metrics(server: Server, stop: asyncio.Event) -> None:
    """Twice a second publish this worker's metrics for the others; once a second add a point
    to the dashboard's history."""
    dp = server.dataplane
    tick = 0
    while not stop.is_set():
        try:
            if dp.exchange is not None:
                dp.publish_metrics()
            if tick % 2 == 0:
                server.history.add(dp.metrics_snapshot(), time.time())
        except Exception:  # a full disk must not stop the server
            log.exception("cannot sample the metrics")
        tick += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, shared by every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Unavailable(
            f"cannot listen on {host}:{port}: {exc.strerror}; is another server there? "
            "choose another --port or --host"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(repository: Path, settings: ServerSettings, announce: Announce | None = None) -> None:
    """Serve the repository until SIGINT / SIGTERM; blocks."""
    tls_context(settings, [])  # a wrong certificate or key file stops the server at once
    load_keys(settings.api_keys, settings.api_keys_env)
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    socks = [sock]
    if settings.metrics_port is not None:
        try:
            socks.append(bind(settings.host, settings.metrics_port))
        except Unavailable:
            sock.close()
            raise Unavailable(
                f"cannot listen for metrics on {settings.host}:{settings.metrics_port}: the port "
                "is in use; is another server there? choose another --metrics-port"
            ) from None
    if settings.grpc_port is not None and settings.workers > 1:
        # the workers share the gRPC port with SO_REUSEPORT, which would also let them share it
        # with another server: make sure nobody holds it first
        try:
            bind(settings.host, settings.grpc_port).close()
        except Unavailable:
            for s in socks:
                s.close()
            raise Unavailable(
                f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}: the port is in "
                "use; is another server there? choose another --grpc-port"
            ) from None
    if settings.workers <= 1:
        _serve_worker(repository, settings, socks, announce, port)
        return
    _supervise(repository, settings, socks, announce, port)


def _serve_worker(
    repository: Path,
    settings: ServerSettings,
    socks: list[socket.socket],
    announce: Announce | None,
    port: int,
) -> None:
    """Serve in this process: ``socks`` are the HTTP listener and, with --metrics-port, the
    metrics one."""
    server = build(repository, settings)
    # what is loaded now lives as long as the server: keep the collector from re-scanning it,
    # and collect the young generation less often (the request path makes few cycles)
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    try:
        _run_loop(_serve_async(server, socks, settings, announce, port))
    finally:
        server.dataplane.models.close()


async def _serve_async(
    server: Server,
    socks: list[socket.socket],
    settings: ServerSettings,
    announce: Announce | None,
    port: int,
) -> None:
    """Accept connections until SIGINT / SIGTERM, then drain: readiness turns false, the socket
    stops accepting, in-flight requests are answered (bounded), connections close."""
    loop = asyncio.get_running_loop()
    connections = Connections(
        keep_alive_s=settings.keep_alive_s,
        in_flight=server.in_flight,
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
    )
    tls = tls_context(settings, ["http/1.1"])
    # accept HTTP only once gRPC listens too, so that ready means ready on both
    apps: list[Any] = [server.http, MetricsPortApp(server.http)]
    listeners = [
        await loop.create_server(
            lambda app=app: HttpServerProtocol(app, connections),
            sock=sock,
            backlog=2048,
            start_serving=False,
            ssl=tls,
            ssl_handshake_timeout=TLS_HANDSHAKE_S if tls is not None else None,
        )
        for sock, app in zip(socks, apps, strict=False)
    ]
    grpc_server = None
    if settings.grpc_port is not None:
        from mserve.server.grpc.h2server import start_grpc
        from mserve.server.grpc.service import GrpcService

        try:
            grpc_server = await start_grpc(
                GrpcService(server.dataplane, server.in_flight, server.keys),
                settings.host,
                settings.grpc_port,
                settings.max_body_bytes,
                shared=settings.workers > 1,
                tls=tls_context(settings, ["h2"]),
            )
        except (OSError, RuntimeError) as exc:
            for listener in listeners:
                listener.close()
            raise Unavailable(
                f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}: {exc}; is "
                "another server there? choose another --grpc-port"
            ) from None
    for listener in listeners:
        await listener.start_serving()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sampler = loop.create_task(_sample_metrics(server, stop))
    poller = None
    if settings.poll_interval_s > 0:  # each worker polls the repository on its own
        from mserve.server.reload import poll_repository

        models = server.dataplane.models
        poller = loop.create_task(poll_repository(models, settings.poll_interval_s, stop))
    if announce is not None:
        ready = sorted({r.name for r in server.dataplane.repository_index(ready_only=True)})
        secure = bool(settings.tls_cert)
        grpc_note = (
            f" and grpc{'s' if secure else ''}://{settings.host}:{settings.grpc_port}"
            if grpc_server is not None
            else ""
        )
        if settings.metrics_port is not None:
            grpc_note += f", metrics on port {socks[1].getsockname()[1]}"
        notes = []
        if server.keys.enabled:
            notes.append(f"{len(server.keys)} API key(s)")
        if settings.management:
            notes.append("model management on")
        announce(
            f"serving {len(ready)} model(s) [{', '.join(ready)}] on "
            f"http{'s' if secure else ''}://{settings.host}:{port}{grpc_note} with "
            f"{settings.workers} worker(s)" + (f"; {', '.join(notes)}" if notes else "")
        )
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=5.0)
        except TimeoutError:
            connections.close_idle()
    # readiness turns false first (and the server serves on for unready_s, so that load
    # balancers notice before connections are refused), then no new connection is accepted,
    # then every request that was accepted is answered (at most drain_s), then they close
    server.dataplane.set_ready(False)
    if settings.unready_s > 0:
        await asyncio.sleep(settings.unready_s)
    for listener in listeners:
        listener.close()
    if grpc_server is not None:
        await asyncio.gather(
            connections.drain(settings.drain_s), grpc_server.stop(settings.drain_s)
        )
    else:
        await connections.drain(settings.drain_s)
    await sampler
    if poller is not None:
        await poller  # a load it started finishes first
    summary = (
        f"drained: {connections.answered} of {connections.accepted} HTTP request(s) answered, "
        f"{connections.abandoned} unanswered as their connection closed"
    )
    log.info("%s", summary)
    if announce is not None or settings.workers > 1:
        print(f"mserve: pid {os.getpid()} {summary}", file=sys.stderr, flush=True)


def _run_loop(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(coro)
        return
    uvloop.run(coro)


def _worker_main(
    repository: Path, settings: ServerSettings, socks: list[socket.socket], announce_first: bool
) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(name)s: %(message)s")
    announce: Announce | None = None
    if announce_first:

        def announce(msg: str) -> None:
            print(f"mserve: {msg}", file=sys.stderr, flush=True)

    try:
        _serve_worker(repository, settings, socks, announce, socks[0].getsockname()[1])
    except MserveError as exc:  # cannot serve at all: say why once, and stop the server
        print(f"mserve: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(WORKER_CANNOT_SERVE)


#: A worker's exit status when it cannot serve at all: the supervisor stops instead of
#: starting it again.
WORKER_CANNOT_SERVE = 3


def _supervise(
    repository: Path,
    settings: ServerSettings,
    socks: list[socket.socket],
    announce: Announce | None,
    port: int,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    metrics_dir = tempfile.mkdtemp(prefix="mserve-metrics-")
    settings = replace(settings, metrics_dir=metrics_dir)

    def start(first: bool) -> Any:
        p = ctx.Process(
            target=_worker_main,
            args=(repository, settings, socks, first and announce is not None),
            name="mserve-worker",
        )
        p.start()
        return p

    workers = [start(i == 0) for i in range(settings.workers)]

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        # the workers close their copies as they drain; once ours is closed too, the kernel
        # refuses new connections instead of queueing them where no one will accept them
        for sock in socks:
            sock.close()
        for p in workers:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(workers):
                if p.is_alive() or stopping:
                    continue
                if p.exitcode == WORKER_CANNOT_SERVE:
                    failed = True
                    stop(signal.SIGTERM, None)
                    break
                log.error("worker pid %s exited with %s; starting a new one", p.pid, p.exitcode)
                workers[i] = start(False)
    finally:
        for p in workers:  # each drains for at most drain_s, then closes
            p.join(timeout=settings.unready_s + settings.drain_s + 30)
            if p.is_alive():
                p.kill()
        for sock in socks:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if failed:
        raise Unavailable("a worker could not serve (its message is above); the server stopped")
