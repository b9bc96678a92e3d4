"""The V2 requests the bench sends are what the server decodes: JSON and binary, every dtype."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from mserve.bench.targets.v2http import V2HttpTarget
from mserve.bench.workload import InputSpec, random_samples
from mserve.server.http.codec import HEADER_LENGTH, decode_infer

SPECS = [
    InputSpec("x", "FP32", (-1, 3)),
    InputSpec("ids", "INT64", (-1, 2)),
    InputSpec("flag", "BOOL", (-1, 1)),
    InputSpec("half", "FP16", (-1, 2)),
    InputSpec("text", "BYTES", (-1,)),
]


def split(request: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")[1:]
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return headers, body


@pytest.mark.parametrize("binary", [False, True])
def test_bench_requests_decode_to_the_samples(binary: bool) -> None:
    target = V2HttpTarget("http://127.0.0.1:1", model="m", binary=binary)
    target.metadata = {"outputs": [{"name": "y"}]}
    sample = random_samples(SPECS, 2, {}, seed=1, count=1)[0]
    request = target.encode_request("/v2/models/m/infer", sample, SPECS)
    headers, body = split(request)
    assert int(headers["content-length"]) == len(body)
    header_length = int(headers[HEADER_LENGTH]) if binary else None
    assert (HEADER_LENGTH in headers) is binary
    decoded = decode_infer(body, header_length, "m", None)
    got: dict[str, Any] = {t.name: t for t in decoded.inputs}
    for spec in SPECS:
        assert got[spec.name].datatype == spec.datatype
        assert np.array_equal(got[spec.name].data, sample[spec.name])
    assert decoded.outputs is not None
    assert decoded.outputs[0].parameters == {"binary_data": binary}


def test_prepare_with_nothing_listening_is_unavailable() -> None:
    from mserve.errors import Unavailable

    target = V2HttpTarget("http://127.0.0.1:1", model="m")
    with pytest.raises(Unavailable, match="cannot connect"):
        asyncio.run(target.prepare())
