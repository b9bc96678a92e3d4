"""`mserve serve --workers N`: processes sharing one port, each answering correctly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mserve.server.process import ServerProcess

pytestmark = pytest.mark.integration


def test_several_workers_share_the_port_and_stop_cleanly(
    tmp_path: Path, place: Any, digits_model: Any
) -> None:
    import tritonclient.http as httpclient

    place(tmp_path, "digits", {1: digits_model.onnx}, config=digits_model.config)
    server = ServerProcess(tmp_path, args=["--workers", "2"]).start(timeout=90)
    try:
        rows = digits_model.x_test[:40]
        expected = digits_model.estimator.predict(rows)
        labels = []
        for row in rows:  # a new connection each time: the kernel spreads them over workers
            client = httpclient.InferenceServerClient(f"{server.host}:{server.port}")
            x = httpclient.InferInput("input", [1, 64], "FP32")
            x.set_data_from_numpy(row.reshape(1, 64))
            labels.append(int(client.infer("digits", [x]).as_numpy("label")[0]))
            client.close()
        assert np.array_equal(labels, expected)
    finally:
        code = server.stop()
    assert code == 0
