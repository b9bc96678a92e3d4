"""The tabular scenario (``examples/tabular/run.py --quick``) end to end: an XGBoost model, a
LightGBM model and a scikit-learn pipeline trained, converted, served by one real ``mserve
serve``, called through a TF Serving REST client and tritonclient (http and grpc), and compared
with the hand-written Flask wrapper by ``mserve compare``; the outcomes are read from the
summary the script writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from example_run import run_quick

pytestmark = pytest.mark.integration

MODELS = ("cancer-xgboost", "wine-lightgbm", "cancer-pipeline")
CLIENTS = ("tfserving-rows", "tfserving-columns", "triton-http", "triton-grpc")
DATA_ROWS = {"load_breast_cancer": 569, "load_wine": 178}
PARITY_ROWS = 512  # mserve convert compares at most this many rows of the data it is given


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_quick("tabular", tmp_path_factory.mktemp("tabular"))


def test_every_check_of_the_scenario_passed(summary: dict[str, Any]) -> None:
    assert summary["ok"], summary["problems"]
    assert summary["problems"] == []
    assert summary["quick"] is True
    assert [m["name"] for m in summary["models"]] == list(MODELS)


def test_each_conversion_passed_parity_on_the_given_rows(summary: dict[str, Any]) -> None:
    for model in summary["models"]:
        convert = model["convert"]
        assert convert["parity"]["ok"], convert["parity"]["failures"]
        assert convert["parity"]["data"] == "given"
        assert convert["parity"]["rows"] == min(DATA_ROWS[model["dataset"]], PARITY_ROWS)
        assert convert["parity"]["label_agreement"] == 1.0
        assert convert["accuracy"] == model["accuracy"]


def test_every_client_gets_the_original_models_predictions(summary: dict[str, Any]) -> None:
    for model in summary["models"]:
        assert model["accuracy"] > 0.9  # the models learned something: the data set is easy
        assert list(model["clients"]) == list(CLIENTS)
        for key, client in model["clients"].items():
            assert client["rows"] == model["test_rows"], key
            assert client["label_mismatches"] == 0, key
            assert client["accuracy"] == model["accuracy"], key
            assert client["max_abs"] <= 1e-5, key
            assert client["ok"], key


def test_compare_measured_mserve_and_the_flask_wrapper(summary: dict[str, Any]) -> None:
    for model in summary["models"]:
        systems = model["compare"]["systems"]
        assert Path(model["compare"]["dir"], "compare.md").is_file()
        for key in ("mserve", "flask"):
            measured = systems[key]
            assert measured["status"] == "ok", measured["reason"]
            assert list(measured["steps"]) == ["1", "4"]
            assert all(step["rps"] > 0 for step in measured["steps"].values())
            assert measured["errors"] == 0
