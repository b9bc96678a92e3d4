"""Protocol clients behind one interface: what to send, how to judge the answer, and the
server's own statistics where the protocol has them."""

from __future__ import annotations

from mserve.bench.targets.base import Prepared, ServerStats, Target

__all__ = ["Prepared", "ServerStats", "Target", "make_target"]


def make_target(protocol: str, url: str, **options: object) -> Target:
    """The target for a protocol name: v2-json, v2-binary, v2-grpc, tfserving or http."""
    if protocol in ("v2-json", "v2-binary"):
        from mserve.bench.targets.v2http import V2HttpTarget

        return V2HttpTarget(url, binary=protocol == "v2-binary", **options)  # type: ignore[arg-type]
    if protocol == "v2-grpc":
        from mserve.bench.targets.v2grpc import V2GrpcTarget

        return V2GrpcTarget(url, **options)  # type: ignore[arg-type]
    if protocol == "tfserving":
        from mserve.bench.targets.tfserving import TfServingTarget

        return TfServingTarget(url, **options)  # type: ignore[arg-type]
    if protocol == "http":
        from mserve.bench.targets.plainhttp import PlainHttpTarget

        return PlainHttpTarget(url, **options)  # type: ignore[arg-type]
    raise ValueError(
        f"unknown protocol '{protocol}'; expected v2-json, v2-binary, v2-grpc, tfserving or http"
    )
