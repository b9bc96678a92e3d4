"""TF Serving's REST API on the shared server, spoken as TF Serving's documentation shows it:
JSON bodies over plain ``urllib``, answers checked against the estimators themselves."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration


def call(served: Any, path: str, doc: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """GET (no body) or POST a JSON body; (status, decoded JSON answer)."""
    data = raw if raw is not None else (None if doc is None else json.dumps(doc).encode())
    req = urllib.request.Request(f"http://{served.address}{path}", data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def tfserving_counts(served: Any) -> dict[tuple[str, str], float]:
    """mserve_requests_total{protocol="tfserving"} by (model, outcome)."""
    with urllib.request.urlopen(f"http://{served.address}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "mserve_requests_total" and s.labels.get("protocol") == "tfserving":
                key = (s.labels["model"], s.labels["outcome"])
                out[key] = out.get(key, 0.0) + s.value
    return out


def test_row_format_predicts_what_the_estimator_predicts(served: Any, digits_model: Any) -> None:
    x = digits_model.x_test[:20]
    status, doc = call(served, "/v1/models/digits:predict", {"instances": x.tolist()})
    assert status == 200
    assert list(doc) == ["predictions"]
    rows = doc["predictions"]
    assert len(rows) == 20
    assert set(rows[0]) == {"label", "probabilities"}
    labels = [r["label"] for r in rows]
    probs = np.array([r["probabilities"] for r in rows])
    assert labels == digits_model.estimator.predict(x).tolist()
    assert np.allclose(probs, digits_model.estimator.predict_proba(x), atol=1e-4)


def test_columnar_format_and_a_named_single_input(served: Any, digits_model: Any) -> None:
    x = digits_model.x_test[:5]
    status, doc = call(served, "/v1/models/digits:predict", {"inputs": {"input": x.tolist()}})
    assert status == 200
    assert doc["outputs"]["label"] == digits_model.estimator.predict(x).tolist()
    assert np.allclose(doc["outputs"]["probabilities"], digits_model.estimator.predict_proba(x))
    status, bare = call(served, "/v1/models/digits:predict", {"inputs": x.tolist()})
    assert status == 200
    assert bare == doc
    named_rows = {
        "signature_name": "serving_default",
        "instances": [{"input": r} for r in x.tolist()],
    }
    status, by_row = call(served, "/v1/models/digits/versions/1:predict", named_rows)
    assert status == 200
    assert [r["label"] for r in by_row["predictions"]] == doc["outputs"]["label"]


def test_two_inputs_in_both_formats(served: Any) -> None:
    a = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    b = [[0.5, 0.5, 0.5, 0.5], [1, 1, 1, 1]]  # integers become FP32
    rows = {"instances": [{"INPUT0": a[i], "INPUT1": b[i]} for i in range(2)]}
    status, doc = call(served, "/v1/models/addsub:predict", rows)
    assert status == 200
    assert doc["predictions"][1] == {"OUTPUT0": [6, 7, 8, 9], "OUTPUT1": [4, 5, 6, 7]}
    status, doc = call(served, "/v1/models/addsub:predict", {"inputs": {"INPUT0": a, "INPUT1": b}})
    assert status == 200
    assert doc["outputs"]["OUTPUT0"] == (np.array(a) + np.array(b)).tolist()
    assert doc["outputs"]["OUTPUT1"] == (np.array(a) - np.array(b)).tolist()


def test_one_output_rows_are_plain_values_and_bytes_travel_as_b64(served: Any) -> None:
    status, doc = call(served, "/v1/models/identity_int8:predict", {"instances": [[1, -2], [3, 4]]})
    assert status == 200
    assert doc == {"predictions": [[1, -2], [3, 4]]}
    text = {"b64": base64.b64encode("héllo".encode()).decode()}
    status, doc = call(served, "/v1/models/identity_bytes:predict", {"instances": [["hi", text]]})
    assert status == 200
    assert doc == {"predictions": [["hi", "héllo"]]}


def test_versions_are_addressed_by_number(served: Any) -> None:
    for version, added in (("1", 1.0), ("3", 3.0)):
        path = f"/v1/models/versions_all/versions/{version}:predict"
        status, doc = call(served, path, {"instances": [[10.0]]})
        assert status == 200
        assert doc == {"predictions": [[10.0 + added]]}
    status, doc = call(served, "/v1/models/versions_all:predict", {"instances": [[10.0]]})
    assert doc == {"predictions": [[13.0]]}  # the latest
    status, doc = call(
        served, "/v1/models/versions_specific/versions/2:predict", {"instances": [[1.0]]}
    )
    assert status == 404
    assert "available versions: 1, 3" in doc["error"]
    status, doc = call(
        served, "/v1/models/versions_all/labels/stable:predict", {"instances": [[1.0]]}
    )
    assert status == 404
    assert "no version labels" in doc["error"]


def test_classify_scores_every_class_as_predict_proba_does(served: Any, digits_model: Any) -> None:
    x = digits_model.x_test[:8]
    examples = {"examples": [{"input": row} for row in x.tolist()]}
    status, doc = call(served, "/v1/models/digits:classify", examples)
    assert status == 200
    results = doc["results"]
    assert len(results) == 8
    assert [label for label, _ in results[0]] == [str(c) for c in range(10)]
    scores = np.array([[score for _, score in r] for r in results])
    assert np.allclose(scores, digits_model.estimator.predict_proba(x), atol=1e-4)


def test_regress_where_a_model_has_one_value_per_example(served: Any) -> None:
    doc = {"signature_name": "serving_default", "examples": [{"INPUT": 1.0}, {"INPUT": [2.5]}]}
    status, answer = call(served, "/v1/models/versions_all/versions/2:regress", doc)
    assert status == 200
    assert answer == {"results": [3.0, 4.5]}


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v1/models/digits:regress", "cannot answer :regress"),
        ("/v1/models/addsub:classify", "cannot answer :classify"),
    ],
)
def test_methods_a_model_cannot_answer_are_501(served: Any, path: str, says: str) -> None:
    status, doc = call(served, path, {"examples": [{"input": [0.0] * 64}]})
    assert status == 501
    assert says in doc["error"]


def test_status_and_metadata_have_tf_servings_shapes(served: Any) -> None:
    status, doc = call(served, "/v1/models/digits")
    assert status == 200
    assert doc == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    status, doc = call(served, "/v1/models/versions_all")
    assert [v["version"] for v in doc["model_version_status"]] == ["1", "2", "3"]
    status, doc = call(served, "/v1/models/versions_all/versions/2")
    assert [v["version"] for v in doc["model_version_status"]] == ["2"]
    status, doc = call(served, "/v1/models/broken")
    assert status == 200
    [broken] = doc["model_version_status"]
    assert broken["state"] == "END"
    assert broken["status"]["error_code"] != "OK"
    assert "max_batch_size" in broken["status"]["error_message"]

    status, doc = call(served, "/v1/models/digits/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["input"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["input"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""},
        {"size": "64", "name": ""},
    ]
    assert sig["outputs"]["label"]["dtype"] == "DT_INT64"
    assert sig["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"] == "10"
    status, doc = call(served, "/v1/models/versions_all/versions/2/metadata")
    assert doc["model_spec"]["version"] == "2"


@pytest.mark.parametrize(
    ("path", "body", "code", "says"),
    [
        ("/v1/models/nope:predict", {"instances": [[1.0]]}, 404, "unknown model 'nope'"),
        ("/v1/models/nope", None, 404, "unknown model 'nope'"),
        ("/v1/models/nope/metadata", None, 404, "unknown model 'nope'"),
        ("/v1/models/digits:predict", {"instances": [[1.0, 2.0]]}, 400, "shape [64]"),
        ("/v1/models/digits:predict", {"instances": [[1.0] * 64, [1.0]]}, 400, "ragged"),
        (
            "/v1/models/digits:predict",
            {"signature_name": "predict_images", "instances": [[0.0] * 64]},
            400,
            "serving_default",
        ),
        ("/v1/models/digits:predict", b'{"instances": [[1.0', 400, "not valid JSON"),
        ("/v1/models/digits:predict", {"rows": []}, 400, "'instances'"),
        ("/v1/models/digits:explain", {"instances": []}, 404, "no route"),
        ("/v1/models/broken:predict", {"instances": [[1.0, 2.0]]}, 503, "not ready"),
    ],
)
def test_bad_requests_get_an_error_and_the_server_keeps_serving(
    served: Any, path: str, body: Any, code: int, says: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    status, doc = call(served, path, None if raw else body, raw)
    assert status == code
    assert list(doc) == ["error"]
    assert says in doc["error"]
    status, doc = call(served, "/v1/models/digits:predict", {"instances": [[0.0] * 64]})
    assert status == 200
    assert len(doc["predictions"]) == 1


def test_metrics_count_requests_under_protocol_tfserving(served: Any) -> None:
    before = tfserving_counts(served)
    good = {"instances": [[0.0] * 64]}
    for _ in range(3):
        assert call(served, "/v1/models/digits:predict", good)[0] == 200
    assert (
        call(served, "/v1/models/digits:classify", {"examples": [{"input": [0.0] * 64}]})[0] == 200
    )
    assert call(served, "/v1/models/digits:predict", {"instances": [[1.0]]})[0] == 400
    assert call(served, "/v1/models/digits/metadata")[0] == 200  # not an inference: not counted
    after = tfserving_counts(served)

    def delta(model: str, outcome: str) -> float:
        return after.get((model, outcome), 0.0) - before.get((model, outcome), 0.0)

    assert delta("digits", "success") == 4
    assert delta("digits", "bad_request") == 1
    assert sum(after.values()) - sum(before.values()) == 5


def test_bench_speaks_tfserving(served: Any, mserve_cli: Any) -> None:
    proc = mserve_cli(
        "bench",
        f"http://{served.address}",
        "-m",
        "addsub",
        "--protocol",
        "tfserving",
        "--batch-size",
        "2",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--window",
        "0.5",
        "-q",
        "--no-save",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"]["protocol"] == "tfserving"
    assert result["target"]["model"] == "addsub"
    [step] = result["steps"]
    assert step["error_count"] == 0
    assert step["count"] > 20
    assert step["server"] is None
