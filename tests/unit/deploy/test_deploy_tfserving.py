"""``mserve deploy tfserving``: a Keras model trained here on scikit-learn's iris is exported
into TF Serving's layout and, loaded back as a SavedModel, its serving_default signature gives
the Keras model's predictions; SavedModel directories are copied; models.config and
monitoring.config parse as TF Serving's protos; anything else is refused with a usage error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from mserve.cli.exit_codes import OK, USAGE
from mserve.cli.main import main
from mserve.deploy.tfserving import models_config, monitoring_config, parse_model_arg

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

_F = descriptor_pb2.FieldDescriptorProto
#: The fields of TF Serving's config protos (tensorflow_serving/config/model_server_config.proto,
#: monitoring_config.proto and sources/storage_path/file_system_storage_path_source.proto) that
#: the written files use, with their upstream names, numbers and types; tensorflow_serving's
#: Python package is not a dependency. Text format is parsed by field name, so a misspelt or
#: misplaced field fails here as it would in TF Serving.
_PROTOS = {
    "ModelServerConfig": [("model_config_list", 1, _F.TYPE_MESSAGE, False, "ModelConfigList")],
    "ModelConfigList": [("config", 1, _F.TYPE_MESSAGE, True, "ModelConfig")],
    "ModelConfig": [
        ("name", 1, _F.TYPE_STRING, False, ""),
        ("base_path", 2, _F.TYPE_STRING, False, ""),
        ("model_platform", 4, _F.TYPE_STRING, False, ""),
        ("model_version_policy", 7, _F.TYPE_MESSAGE, False, "ServableVersionPolicy"),
    ],
    "ServableVersionPolicy": [
        ("latest", 100, _F.TYPE_MESSAGE, False, "Latest"),
        ("all", 101, _F.TYPE_MESSAGE, False, "All"),
        ("specific", 102, _F.TYPE_MESSAGE, False, "Specific"),
    ],
    "Latest": [("num_versions", 1, _F.TYPE_UINT32, False, "")],
    "All": [],
    "Specific": [("versions", 1, _F.TYPE_INT64, True, "")],
    "MonitoringConfig": [("prometheus_config", 1, _F.TYPE_MESSAGE, False, "PrometheusConfig")],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, False, ""),
        ("path", 2, _F.TYPE_STRING, False, ""),
    ],
}


@pytest.fixture(scope="module")
def protos() -> dict[str, Any]:
    """Message classes of the protos in _PROTOS, by name."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tfserving_subset.proto", package="tensorflow.serving", syntax="proto3"
    )
    for name, fields in _PROTOS.items():
        message = file.message_type.add(name=name)
        for field, number, kind, repeated, type_name in fields:
            message.field.add(
                name=field,
                number=number,
                type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
                type_name=f".tensorflow.serving.{type_name}" if type_name else None,
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in _PROTOS
    }


@pytest.fixture(scope="module")
def iris_keras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, np.ndarray]:
    """A small Keras MLP trained on iris, saved as .keras: (path, model, test rows)."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,), name="measurements")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="species")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[::2], y[::2], epochs=20, verbose=0)
    path = tmp_path_factory.mktemp("tfserving") / "iris.keras"
    model.save(path)
    return path, model, x[1::2]


def _run(*argv: str) -> int:
    return main(["deploy", "tfserving", *argv])


def test_keras_export_serves_the_same_predictions(
    iris_keras: tuple[Path, Any, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, model, rows = iris_keras
    out = tmp_path / "tfs"
    assert _run(str(source), "--out", str(out), "--json") == OK
    files = json.loads(capsys.readouterr().out)["files"]
    version = out / "models" / "iris" / "1"
    assert files[0] == str(version)
    assert {Path(f).name for f in files[1:]} == {"models.config", "monitoring.config", "README.md"}
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables").is_dir()
    assert [p.name for p in (out / "models" / "iris").iterdir()] == ["1"]  # no partial left

    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    (name,) = serving.structured_input_signature[1]
    (output,) = serving(**{name: tf.constant(rows)}).values()
    expected = model.predict(rows, verbose=0)
    np.testing.assert_allclose(output.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (output.numpy().argmax(1) == expected.argmax(1)).all()


def test_saved_models_are_copied_and_configs_parse(
    iris_keras: tuple[Path, Any, np.ndarray], tmp_path: Path, protos: dict[str, Any]
) -> None:
    source, _, _ = iris_keras
    first = tmp_path / "first"
    assert _run(str(source), "--out", str(first)) == OK
    saved = first / "models" / "iris" / "1"  # a version folder: named after its parent
    out = tmp_path / "tfs"
    assert _run(f"flowers={source}", str(saved), "--out", str(out), "--version", "3") == OK
    for name in ("flowers", "iris"):
        assert (out / "models" / name / "3" / "saved_model.pb").is_file()
    assert _run(f"flowers={source}", str(saved), "--out", str(out), "--version", "3") == OK

    config = text_format.Parse((out / "models.config").read_text(), protos["ModelServerConfig"]())
    entries = config.model_config_list.config
    assert [(c.name, c.base_path, c.model_platform) for c in entries] == [
        ("flowers", "/models/flowers", "tensorflow"),
        ("iris", "/models/iris", "tensorflow"),
    ]
    assert all(c.model_version_policy.latest.num_versions == 1 for c in entries)
    monitoring = text_format.Parse(
        (out / "monitoring.config").read_text(), protos["MonitoringConfig"]()
    )
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"

    readme = (out / "README.md").read_text()
    assert "tensorflow/serving" in readme
    assert "-p 8500:8500 -p 8501:8501" in readme
    assert "--model_config_file=/config/models.config" in readme
    assert "--monitoring_config_file=/config/monitoring.config" in readme
    assert "mserve bench http://127.0.0.1:8501 --protocol tfserving -m flowers" in readme


def test_a_misspelt_config_fails_to_parse(protos: dict[str, Any]) -> None:
    text = models_config(["iris"]).replace("base_path", "basepath")
    with pytest.raises(text_format.ParseError, match="basepath"):
        text_format.Parse(text, protos["ModelServerConfig"]())
    text = monitoring_config().replace("enable: true", "enable: yes please")
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, protos["MonitoringConfig"]())


def test_names_in_config_are_quoted() -> None:
    assert 'name: "a.b-c_1"' in models_config(["a.b-c_1"])
    assert parse_model_arg("digits=models/d.keras") == ("digits", Path("models/d.keras"))
    assert parse_model_arg("models/d.keras") == (None, Path("models/d.keras"))


@pytest.mark.parametrize(
    ("make", "argv", "words"),
    [
        ("model.onnx", [], "an ONNX model. TF Serving serves TensorFlow models only"),
        ("model.onnx", [], "'mserve serve'"),
        ("notes.txt", [], "expected a SavedModel directory"),
        ("folder/", [], "holds no saved_model.pb"),
        ("missing.keras!", [], "no such file or directory"),
        ("broken.keras", [], "cannot load the Keras model"),
        ("a.keras", ["--version", "0"], "version must be 1 or more"),
        ("a.keras", ["--name", "bad name"], "not usable in TF Serving's URLs"),
    ],
)
def test_bad_input_is_a_usage_error(
    make: str, argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / make.rstrip("/!")
    if make.endswith("/"):
        path.mkdir()
    elif not make.endswith("!"):
        path.write_bytes(b"not a model")
    out = tmp_path / "tfs"
    code = _run(str(path), "--out", str(out), *argv)
    assert code == USAGE
    err = capsys.readouterr().err
    assert err.startswith("mserve deploy tfserving: error: ")
    assert words in err
    assert not (out / "models.config").exists()


def test_names_must_be_told_apart(
    iris_keras: tuple[Path, Any, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _, _ = iris_keras
    out = str(tmp_path / "tfs")
    assert _run(str(source), str(source), "--out", out) == USAGE
    assert "iris given twice" in capsys.readouterr().err
    assert _run(str(source), str(source), "--name", "x", "--out", out) == USAGE
    assert "--name names one model" in capsys.readouterr().err
