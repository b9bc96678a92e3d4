"""TF Serving's REST bodies <-> protocol types: rows, columns, b64, datatypes, every error."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import numpy as np
import orjson
import pytest

from mserve.bench.targets.tfserving import TfServingTarget, input_specs
from mserve.bench.workload import InputSpec, random_samples
from mserve.errors import InvalidInput, InvalidRequest, MalformedRequest, Unsupported
from mserve.protocol import RepositoryEntry, Tensor, TensorSpec
from mserve.server.http import tfserving_codec as tfs

ONE = [TensorSpec("x", "FP32", (-1, 3))]
TWO = [TensorSpec("a", "INT64", (-1, 2)), TensorSpec("b", "FP32", (-1,))]
TEXT = [TensorSpec("s", "BYTES", (-1,))]


def wire(doc: Any) -> Any:
    """A response document as the client reads it."""
    return orjson.loads(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))


def arrays(tensors: list[Tensor]) -> dict[str, np.ndarray]:
    return {t.name: t.data for t in tensors}


# -- requests -----------------------------------------------------------------------------------


def test_rows_of_one_input_stack_along_a_first_dimension() -> None:
    inputs, rows = tfs.decode_predict({"instances": [[1, 2, 3], [4.5, 5, 6]]}, ONE, "m")
    assert rows
    [t] = inputs
    assert (t.name, t.datatype, t.data.dtype) == ("x", "FP32", np.float32)
    assert np.array_equal(t.data, [[1, 2, 3], [4.5, 5, 6]])


def test_named_rows_make_one_tensor_per_input_in_its_datatype() -> None:
    doc = {"instances": [{"a": [1, 2], "b": 0.5}, {"a": [3, 4], "b": 1}]}
    got = arrays(tfs.decode_predict(doc, TWO, "m")[0])
    assert got["a"].dtype == np.int64
    assert np.array_equal(got["a"], [[1, 2], [3, 4]])
    assert got["b"].dtype == np.float32
    assert np.array_equal(got["b"], [0.5, 1.0])


def test_a_named_row_of_a_single_input_model_works_too() -> None:
    inputs, _ = tfs.decode_predict({"instances": [{"x": [1, 2, 3]}]}, ONE, "m")
    assert inputs[0].data.shape == (1, 3)


def test_columnar_tensors_are_taken_whole() -> None:
    inputs, rows = tfs.decode_predict({"inputs": [[1, 2, 3]]}, ONE, "m")
    assert not rows
    assert inputs[0].data.shape == (1, 3)
    doc = {"inputs": {"a": [[1, 2]], "b": [7]}}
    got = arrays(tfs.decode_predict(doc, TWO, "m")[0])
    assert got["a"].shape == (1, 2)
    assert got["b"].tolist() == [7.0]


def test_b64_and_text_fill_bytes_inputs() -> None:
    raw = bytes(range(256))
    doc = {"instances": [{"b64": base64.b64encode(raw).decode()}, "héllo"]}
    [t] = tfs.decode_predict(doc, TEXT, "m")[0]
    assert t.datatype == "BYTES"
    assert t.data.tolist() == [raw, "héllo".encode()]
    [c] = tfs.decode_predict({"inputs": {"s": [{"b64": "AAE="}]}}, TEXT, "m")[0]
    assert c.data.tolist() == [b"\x00\x01"]


@pytest.mark.parametrize(
    ("doc", "specs", "error", "says"),
    [
        ({"instances": [[1, 2, 3], [4, 5]]}, ONE, InvalidInput, "instances[1] has shape [2]"),
        ({"instances": [[1, 2]]}, ONE, InvalidInput, "expected each to have shape [3]"),
        ({"instances": [[[1, 2, 3]]]}, ONE, InvalidInput, "have shape [1, 3]"),
        ({"instances": []}, ONE, MalformedRequest, "non-empty list"),
        ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, ONE, MalformedRequest, "exactly one"),
        ({}, ONE, MalformedRequest, "exactly one"),
        ({"instances": [[1, 2]]}, TWO, InvalidRequest, "has 2 inputs"),
        ({"inputs": [1]}, TWO, InvalidRequest, "has 2 inputs"),
        ({"instances": [{"a": [1, 2]}, {"b": 1}]}, TWO, InvalidRequest, "same inputs"),
        ({"instances": [{"a": [1, 2]}, [1]]}, TWO, MalformedRequest, "is not an object"),
        ({"instances": [{"zz": 1}]}, TWO, InvalidInput, "no such input"),
        ({"instances": [{"a": [1.5, 2], "b": 1}]}, TWO, InvalidInput, "integers for INT64"),
        ({"instances": [{"a": [1, 2**63], "b": 1}]}, TWO, InvalidInput, "outside the range"),
        ({"instances": [["a", "b", "c"]]}, ONE, InvalidInput, "numbers for FP32"),
        ({"instances": [{"b64": "%%"}]}, TEXT, InvalidInput, "not valid base64"),
        ({"instances": [5]}, TEXT, InvalidInput, "strings or"),
    ],
)
def test_bad_requests_say_what_was_expected(
    doc: dict[str, Any], specs: list[TensorSpec], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=re.escape(says)):
        tfs.decode_predict(doc, specs, "m")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"signature_name": "classify_x", "instances": [1]}', "'serving_default'"),
    ],
)
def test_bodies_that_are_not_predict_requests_are_refused(body: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        tfs.parse_body(body, "predict")


def test_the_default_signature_may_be_named_or_left_out() -> None:
    for sig in ("serving_default", ""):
        assert tfs.parse_body(orjson.dumps({"signature_name": sig}), "predict")
    assert tfs.parse_body(b"{}", "predict") == {}


def test_examples_are_flat_features_shaped_into_rows_with_context_merged() -> None:
    specs = [TensorSpec("img", "FP32", (-1, 2, 2)), TensorSpec("k", "INT64", (-1, 1))]
    doc = {"context": {"k": 3}, "examples": [{"img": [1, 2, 3, 4]}, {"img": [5, 6, 7, 8]}]}
    got = arrays(tfs.decode_examples(doc, specs, "m"))
    assert got["img"].shape == (2, 2, 2)
    assert got["img"][1, 1, 0] == 7
    assert got["k"].tolist() == [[3], [3]]
    with pytest.raises(InvalidRequest, match="context or in the examples"):
        tfs.decode_examples({"context": {"k": 3}, "examples": [{"k": 1}]}, specs, "m")
    with pytest.raises(MalformedRequest, match="examples"):
        tfs.decode_examples({"instances": [1]}, specs, "m")


# -- responses ----------------------------------------------------------------------------------

LABEL = Tensor("label", "INT64", np.array([1, 0]))
PROBS = Tensor("probabilities", "FP32", np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32))
LABEL_SPEC = TensorSpec("label", "INT64", (-1,))
PROBS_SPEC = TensorSpec("probabilities", "FP32", (-1, 2))


def test_rows_get_predictions_and_columns_get_outputs() -> None:
    one = [PROBS]
    assert wire(tfs.encode_predict(one, True)) == {"predictions": [[0.25, 0.75], [1.0, 0.0]]}
    assert wire(tfs.encode_predict(one, False)) == {"outputs": [[0.25, 0.75], [1.0, 0.0]]}
    both = [LABEL, PROBS]
    assert wire(tfs.encode_predict(both, True)) == {
        "predictions": [
            {"label": 1, "probabilities": [0.25, 0.75]},
            {"label": 0, "probabilities": [1.0, 0.0]},
        ]
    }
    assert wire(tfs.encode_predict(both, False)) == {
        "outputs": {"label": [1, 0], "probabilities": [[0.25, 0.75], [1.0, 0.0]]}
    }


def test_bytes_outputs_are_text_or_b64_and_fp16_is_a_number() -> None:
    data = np.array([b"ok", b"\xff"], dtype=object)
    out = [
        Tensor("text", "BYTES", data),
        Tensor("raw_bytes", "BYTES", data.copy()),
        Tensor("half", "FP16", np.array([0.5, 2.0], dtype=np.float16)),
    ]
    assert wire(tfs.encode_predict(out, False))["outputs"] == {
        "text": ["ok", {"b64": "/w=="}],
        "raw_bytes": [{"b64": "b2s="}, {"b64": "/w=="}],
        "half": [0.5, 2.0],
    }


def test_outputs_without_a_shared_first_dimension_cannot_be_rows() -> None:
    out = [LABEL, Tensor("total", "FP32", np.array(3.0, dtype=np.float32))]
    with pytest.raises(InvalidRequest, match="columnar format"):
        tfs.encode_predict(out, True)


def test_classify_pairs_class_indices_with_scores() -> None:
    name = tfs.scores_output([LABEL_SPEC, PROBS_SPEC], "m").name
    assert wire(tfs.encode_classify([LABEL, PROBS], name, "m")) == {
        "results": [[["0", 0.25], ["1", 0.75]], [["0", 1.0], ["1", 0.0]]]
    }
    classes = Tensor("classes", "BYTES", np.array([[b"no", b"yes"]] * 2, dtype=object))
    got = wire(tfs.encode_classify([PROBS, classes], name, "m"))
    assert got["results"][0] == [["no", 0.25], ["yes", 0.75]]
    wrong = Tensor("label", "INT64", np.array([7, 3]))  # classes other than 0..C-1
    with pytest.raises(Unsupported, match="use :predict"):
        tfs.encode_classify([wrong, PROBS], name, "m")


def test_which_models_classify_and_regress() -> None:
    with pytest.raises(Unsupported, match="cannot answer :classify"):
        tfs.scores_output([LABEL_SPEC], "m")
    with pytest.raises(Unsupported, match="cannot answer :regress"):
        tfs.regress_output([LABEL_SPEC, PROBS_SPEC], "m")
    value = TensorSpec("y", "FP32", (-1, 1))
    assert tfs.regress_output([LABEL_SPEC, value], "m") is value
    out = [Tensor("y", "FP32", np.array([[1.5], [2.0]], dtype=np.float32))]
    assert wire(tfs.encode_regress(out, "y")) == {"results": [1.5, 2.0]}


def test_status_maps_states_and_failures() -> None:
    rows = [
        RepositoryEntry("m", "1", "READY"),
        RepositoryEntry("m", None, "LOADING"),
        RepositoryEntry("m", None, "UNAVAILABLE", "unloaded"),
        RepositoryEntry("m", None, "UNAVAILABLE", "config.yaml: field 'x': expected y"),
    ]
    got = tfs.status_doc(rows)["model_version_status"]
    assert got[0] == {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert [g["state"] for g in got[1:]] == ["LOADING", "END", "END"]
    assert got[2]["status"]["error_code"] == "OK"
    assert got[3]["status"] == {
        "error_code": "UNKNOWN",
        "error_message": "config.yaml: field 'x': expected y",
    }


def test_metadata_has_one_predict_signature_with_tf_datatypes() -> None:
    doc = tfs.metadata_doc("m", "2", TWO, [PROBS_SPEC, TensorSpec("t", "BYTES", (-1,))])
    assert doc["model_spec"] == {"name": "m", "signature_name": "", "version": "2"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["a"] == {
        "dtype": "DT_INT64",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
            "unknown_rank": False,
        },
        "name": "a",
    }
    assert sig["outputs"]["t"]["dtype"] == "DT_STRING"
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"


# -- the bench's requests are what the server decodes -----------------------------------------

ALL = [
    InputSpec("x", "FP32", (-1, 3)),
    InputSpec("ids", "INT64", (-1, 2)),
    InputSpec("flag", "BOOL", (-1, 1)),
    InputSpec("half", "FP16", (-1, 2)),
    InputSpec("text", "BYTES", (-1,)),
]


@pytest.mark.parametrize("specs", [ALL, ALL[:1], ALL[4:]], ids=["five", "one", "bytes"])
def test_bench_requests_decode_to_the_samples(specs: list[InputSpec]) -> None:
    tensor_specs = [TensorSpec(s.name, s.datatype, s.shape) for s in specs]
    metadata = wire(tfs.metadata_doc("m", "1", tensor_specs, tensor_specs))
    assert input_specs(metadata) == specs
    target = TfServingTarget("http://127.0.0.1:1", model="m")
    sample = random_samples(specs, 3, {}, seed=1, count=1)[0]
    request = target.encode_request("/v1/models/m:predict", sample, specs)
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/models/m:predict HTTP/1.1")
    inputs, rows = tfs.decode_predict(tfs.parse_body(body, "predict"), tensor_specs, "m")
    assert rows
    got = arrays(inputs)
    for spec in specs:
        assert np.array_equal(got[spec.name], sample[spec.name]), spec.name


def test_bench_metadata_errors_say_what_was_expected() -> None:
    with pytest.raises(InvalidRequest, match="serving_default"):
        input_specs({"metadata": {}})
    meta = wire(tfs.metadata_doc("m", "1", ONE, ONE))
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    sig["inputs"]["x"]["dtype"] = "DT_RESOURCE"
    with pytest.raises(InvalidRequest, match="DT_RESOURCE"):
        input_specs(meta)


def test_bench_check_wants_predictions() -> None:
    from mserve.bench.targets.tfserving import PredictionsCheck

    check = PredictionsCheck()
    assert check(200, b'{"predictions": [1]}') is None
    assert check(200, b'{"error": "x"}') == "bad_response"
    assert check(503, b"") == "http_503"


def test_bench_expect_is_refused_with_a_reason(tmp_path: Any) -> None:
    target = TfServingTarget("http://127.0.0.1:1", model="m", expect=tmp_path / "e.json")
    with pytest.raises(InvalidRequest, match="v2-json"):
        asyncio.run(target.prepare())
