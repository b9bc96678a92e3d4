"""Caffe -> ONNX: real deploy.prototxt and .caffemodel files, written here, converted, and run.

Each test writes the prototxt as text and the .caffemodel as the binary NetParameter Caffe saves
(the prototxt's layers with their learned blobs), converts them, and runs the graph in
onnxruntime against an independent computation: PyTorch (whose pooling and LRN follow Caffe's
rules) or numpy.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from mserve.convert.base import Exported
from mserve.convert.caffe import caffe_pb2, caffe_to_onnx
from mserve.errors import ConversionError

Blobs = Mapping[str, Sequence[np.ndarray]]


@pytest.fixture(scope="module")
def torch() -> ModuleType:
    return pytest.importorskip("torch")


def _files(tmp_path: Path, prototxt: str, blobs: Blobs) -> tuple[Path, Path]:
    """deploy.prototxt from text, and a .caffemodel: its layers with ``blobs`` by layer name."""
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(prototxt)
    model = text_format.Parse(prototxt, caffe_pb2.NetParameter(), allow_unknown_field=True)
    for layer in model.layer:
        for array in blobs.get(layer.name, ()):
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            blob.data.extend(np.asarray(array, np.float32).ravel().tolist())
    weights = tmp_path / "weights.caffemodel"
    weights.write_bytes(model.SerializeToString())
    return deploy, weights


def _convert(tmp_path: Path, prototxt: str, blobs: Blobs | None = None) -> Exported:
    return caffe_to_onnx(*_files(tmp_path, prototxt, blobs or {}))


def _run(exported: Exported, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check the graph fully (including shape inference) and run it."""
    onnx.checker.check_model(exported.model, full_check=True)
    session = ort.InferenceSession(
        exported.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def _input(name: str, *dims: int) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return (
        f'layer {{ name: "{name}" type: "Input" top: "{name}" '
        f"input_param {{ shape {{ {shape} }} }} }}\n"
    )


# -- a real model ------------------------------------------------------------------------------

LENET = (
    _input("data", 1, 1, 8, 8)
    + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 1e-5 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 32 } }
layer { name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1"
        dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""
)


def test_lenet_trained_on_digits_computes_what_torch_computes(
    tmp_path: Path, torch: ModuleType
) -> None:
    digits = pytest.importorskip("sklearn.datasets").load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1350], order[1350:]
    x_train, x_test, y_train, y_test = (
        images[train],
        images[test],
        digits.target[train],
        digits.target[test],
    )
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.AvgPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(32, 10),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    features, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: more threads only contend (10x slower on 2 cores)
    try:
        for _ in range(8):
            for batch in torch.randperm(len(features)).split(64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(net(features[batch]), labels[batch]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x_test)), dim=1).numpy()

    def numpy(tensor: Any) -> np.ndarray:
        return tensor.detach().numpy()

    conv1, bn1, _, _, conv2, _, _, ip1, _, _, ip2 = net
    factor = np.float32(999.5)  # Caffe keeps moving sums and their weight
    blobs = {
        "conv1": [numpy(conv1.weight), numpy(conv1.bias)],
        "bn1": [
            numpy(bn1.running_mean) * factor,
            numpy(bn1.running_var) * factor,
            np.asarray([factor]),
        ],
        "scale1": [numpy(bn1.weight), numpy(bn1.bias)],
        "conv2": [numpy(conv2.weight), numpy(conv2.bias)],
        "ip1": [numpy(ip1.weight), numpy(ip1.bias)],
        "ip2": [numpy(ip2.weight), numpy(ip2.bias)],
    }

    exported = _convert(tmp_path, LENET, blobs)
    got = _run(exported, {"data": x_test})["prob"]

    assert exported.framework == "caffe"
    assert exported.reference is None
    assert exported.class_outputs == ("prob",)
    assert [o.name for o in exported.model.graph.output] == ["prob"]
    batch = exported.model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    assert got.shape == (len(x_test), 10)
    assert np.abs(got - expected).max() < 1e-4
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    assert (got.argmax(axis=1) == y_test).mean() > 0.9  # it is a real, trained model
    ops = [node.op_type for node in exported.model.graph.node]
    assert ops.count("BatchNormalization") == 1  # BatchNorm and Scale folded
    assert "Mul" not in ops
    assert any("folded" in note for note in exported.notes)


# -- layers, one small net each ------------------------------------------------------------------


def test_concat_and_every_eltwise_operation(tmp_path: Path) -> None:
    prototxt = """
input: "a"
input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
input: "b"
input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" concat_param { axis: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum"
        eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
layer { name: "plain" type: "Eltwise" bottom: "a" bottom: "b" top: "plain" }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "b" bottom: "a" top: "prod"
        eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "max"
        eltwise_param { operation: MAX } }
"""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 4, 2, 3, 3)).astype(np.float32)
    got = _run(_convert(tmp_path, prototxt), {"a": a, "b": b})

    assert list(got) == ["cat", "sum", "plain", "prod", "max"]
    np.testing.assert_allclose(got["cat"], np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(got["sum"], 0.5 * a - 2 * b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["plain"], a + b, rtol=1e-6)
    np.testing.assert_allclose(got["prod"], a * b * a, rtol=1e-6)
    np.testing.assert_allclose(got["max"], np.maximum(a, b))


def test_activations_flatten_and_reshape(tmp_path: Path) -> None:
    prototxt = """
input: "x"
input_dim: 1 input_dim: 6 input_dim: 2 input_dim: 2
layer { name: "sig" type: "Sigmoid" bottom: "x" top: "s" }
layer { name: "tanh" type: "TanH" bottom: "x" top: "t" }
layer { name: "leaky" type: "ReLU" bottom: "t" top: "t" relu_param { negative_slope: 0.1 } }
layer { name: "relu" type: "ReLU" bottom: "x" top: "r" }
layer { name: "flat" type: "Flatten" bottom: "x" top: "flat" }
layer { name: "flat23" type: "Flatten" bottom: "x" top: "flat23" flatten_param { axis: 2 } }
layer { name: "keep" type: "Reshape" bottom: "x" top: "keep"
        reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
layer { name: "split" type: "Reshape" bottom: "x" top: "split"
        reshape_param { shape { dim: 3 dim: 2 } axis: 1 num_axes: 1 } }
layer { name: "soft" type: "Softmax" bottom: "keep" top: "soft" softmax_param { axis: 1 } }
"""
    x = np.random.default_rng(2).standard_normal((3, 6, 2, 2)).astype(np.float32)
    exported = _convert(tmp_path, prototxt)
    got = _run(exported, {"x": x})

    tanh = np.tanh(x)
    # "t" is written twice (TanH, then an in-place ReLU): the output is the last version.
    assert sorted(got) == sorted(["s", "t", "r", "flat", "flat23", "split", "soft"])
    np.testing.assert_allclose(got["s"], 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(got["t"], np.where(tanh > 0, tanh, 0.1 * tanh), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["r"], np.maximum(x, 0))
    np.testing.assert_array_equal(got["flat"], x.reshape(3, 24))
    np.testing.assert_array_equal(got["flat23"], x.reshape(3, 6, 4))
    np.testing.assert_array_equal(got["split"], x.reshape(3, 3, 2, 2, 2))
    keep = x.reshape(3, 12, 2)
    soft = np.exp(keep) / np.exp(keep).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got["soft"], soft, rtol=1e-5)
    assert exported.class_outputs == ()  # a 3-D softmax is not a class distribution


def test_grouped_dilated_convolution_with_h_w_settings(tmp_path: Path, torch: ModuleType) -> None:
    prototxt = (
        _input("x", 1, 4, 9, 8)
        + """
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 6 group: 2 bias_term: false dilation: 2
                            kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 } }
"""
    )
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    got = _run(_convert(tmp_path, prototxt, {"conv": [weight]}), {"x": x})["y"]

    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(weight),
        stride=(2, 1),
        padding=(1, 0),
        dilation=2,
        groups=2,
    ).numpy()
    assert got.shape == expected.shape == (2, 6, 4, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


POOLING_CASES = {
    # name: (input H, W, pooling_param, Caffe's output H, W)
    "ceil differs from floor": (6, 6, "kernel_size: 3 stride: 2", (3, 3)),
    "ceil with padding": (6, 6, "kernel_size: 3 stride: 2 pad: 1", (4, 4)),
    "last window starts in the padding": (5, 5, "kernel_size: 2 stride: 2 pad: 1", (3, 3)),
    "one axis up, the other clipped": (
        6,
        5,
        "kernel_h: 3 kernel_w: 2 stride: 2 pad: 1",
        (4, 3),
    ),
    "floor round_mode": (6, 6, "kernel_size: 3 stride: 2 round_mode: FLOOR", (2, 2)),
}


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("case", list(POOLING_CASES))
def test_pooling_sizes_and_averages_like_caffe(
    tmp_path: Path, torch: ModuleType, case: str, pool: str
) -> None:
    height, width, settings, caffe_size = POOLING_CASES[case]
    prototxt = (
        _input("x", 1, 3, height, width)
        + f"""
layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y"
        pooling_param {{ pool: {pool} {settings} }} }}
"""
    )
    x = np.random.default_rng(4).standard_normal((2, 3, height, width)).astype(np.float32)
    got = _run(_convert(tmp_path, prototxt), {"x": x})["y"]

    kernel = (3, 2) if "kernel_h" in settings else (int(settings.split()[1]),) * 2
    args = {
        "kernel_size": kernel,
        "stride": 2,
        "padding": 1 if "pad" in settings else 0,
        "ceil_mode": "FLOOR" not in settings,
    }
    f = torch.nn.functional
    x_torch = torch.from_numpy(x)
    if pool == "MAX":
        expected = f.max_pool2d(x_torch, **args).numpy()
    else:
        expected = f.avg_pool2d(x_torch, count_include_pad=True, **args).numpy()
    assert got.shape == expected.shape == (2, 3, *caffe_size)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_global_pooling(tmp_path: Path) -> None:
    prototxt = (
        _input("x", 1, 3, 4, 5)
        + """
layer { name: "gmax" type: "Pooling" bottom: "x" top: "gmax"
        pooling_param { pool: MAX global_pooling: true } }
layer { name: "gave" type: "Pooling" bottom: "x" top: "gave"
        pooling_param { pool: AVE global_pooling: true } }
"""
    )
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32)
    got = _run(_convert(tmp_path, prototxt), {"x": x})
    np.testing.assert_allclose(got["gmax"], x.max(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(got["gave"], x.mean(axis=(2, 3), keepdims=True), atol=1e-6)


def test_lrn_across_and_within_channels(tmp_path: Path, torch: ModuleType) -> None:
    prototxt = (
        _input("x", 1, 7, 5, 5)
        + """
layer { name: "across" type: "LRN" bottom: "x" top: "across"
        lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "within" type: "LRN" bottom: "x" top: "within"
        lrn_param { local_size: 3 alpha: 0.3 beta: 0.6 norm_region: WITHIN_CHANNEL } }
"""
    )
    x = np.random.default_rng(6).standard_normal((2, 7, 5, 5)).astype(np.float32) * 2
    got = _run(_convert(tmp_path, prototxt), {"x": x})

    f = torch.nn.functional
    x_torch = torch.from_numpy(x)
    # Caffe: x / (k + alpha / n * sum of x**2 over n channels) ** beta, which torch computes.
    across = f.local_response_norm(x_torch, 5, alpha=0.5, beta=0.75, k=2.0).numpy()
    # Caffe: x * (1 + alpha * mean of x**2 over an n x n window, padding counted) ** -beta.
    mean = f.avg_pool2d(x_torch * x_torch, 3, stride=1, padding=1, count_include_pad=True)
    within = (x_torch * (1 + 0.3 * mean) ** -0.6).numpy()
    np.testing.assert_allclose(got["across"], across, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["within"], within, rtol=1e-5, atol=1e-6)


def test_batchnorm_and_scale_that_cannot_fold(tmp_path: Path) -> None:
    prototxt = (
        _input("x", 1, 3, 2, 2)
        + """
layer { name: "bn" type: "BatchNorm" bottom: "x" top: "bn" batch_norm_param { eps: 0.001 } }
layer { name: "scale" type: "Scale" bottom: "bn" top: "scaled" scale_param { bias_term: true } }
layer { name: "tap" type: "TanH" bottom: "bn" top: "tap" }
layer { name: "empty" type: "BatchNorm" bottom: "x" top: "empty"
        batch_norm_param { eps: 1 use_global_stats: false } }
layer { name: "wide" type: "Scale" bottom: "x" top: "wide" scale_param { num_axes: 2 } }
"""
    )
    rng = np.random.default_rng(7)
    mean, var = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3)
    gamma, beta = rng.standard_normal((2, 3)).astype(np.float32)
    wide = rng.standard_normal((3, 2)).astype(np.float32)
    blobs = {
        "bn": [mean * 4, var * 4, np.asarray([4.0])],
        "scale": [gamma, beta],
        "empty": [np.full(3, 5.0), np.full(3, 9.0), np.asarray([0.0])],  # no statistics yet
        "wide": [wide],
    }
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    exported = _convert(tmp_path, prototxt, blobs)
    got = _run(exported, {"x": x})

    def channels(v: np.ndarray) -> np.ndarray:
        return v.reshape(1, 3, 1, 1)

    normal = (x - channels(mean)) / np.sqrt(channels(var) + 0.001)
    np.testing.assert_allclose(got["scaled"], normal * channels(gamma) + channels(beta), rtol=1e-5)
    np.testing.assert_allclose(got["tap"], np.tanh(normal), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["empty"], x / np.sqrt(1.0), rtol=1e-6)
    np.testing.assert_allclose(got["wide"], x * wide.reshape(1, 3, 2, 1), rtol=1e-6)
    assert any("use_global_stats: false" in note for note in exported.notes)


def test_inner_product_over_later_axes_with_transposed_weights(tmp_path: Path) -> None:
    prototxt = (
        _input("x", 1, 2, 3, 4)
        + """
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 5 axis: 2 transpose: true } }
"""
    )
    rng = np.random.default_rng(8)
    weight, bias = rng.standard_normal((12, 5)).astype(np.float32), rng.standard_normal(5)
    x = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    got = _run(_convert(tmp_path, prototxt, {"ip": [weight, bias]}), {"x": x})["y"]
    np.testing.assert_allclose(got, x.reshape(3, 2, 12) @ weight + bias, rtol=1e-5, atol=1e-5)


def test_training_layers_and_phase_rules_are_left_out(tmp_path: Path) -> None:
    prototxt = """
name: "trainval"
state { stage: "deploy" }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "train_lmdb" batch_size: 64 } }
layer { name: "input" type: "Input" top: "data" include { phase: TEST }
        input_param { shape { dim: 10 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 } }
layer { name: "debug" type: "TanH" bottom: "ip" top: "debug" exclude { stage: "deploy" } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    rng = np.random.default_rng(9)
    weight, bias = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3)
    exported = _convert(tmp_path, prototxt, {"ip": [weight, bias]})
    x = rng.standard_normal((2, 4)).astype(np.float32)
    got = _run(exported, {"data": x})

    assert list(got) == ["ip"]
    np.testing.assert_allclose(got["ip"], x @ weight.T + bias, rtol=1e-5, atol=1e-6)
    notes = " ".join(exported.notes)
    assert "left out layers not in the TEST phase: data, debug" in notes
    assert "skipped layer 'accuracy' (Accuracy)" in notes
    assert "skipped layer 'loss' (SoftmaxWithLoss)" in notes
    assert "data_param" in notes  # a field this schema does not read, ignored with a note


def test_v1_caffemodel_blobs_in_the_legacy_4d_form(tmp_path: Path) -> None:
    prototxt = (
        _input("x", 1, 4)
        + """
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }
"""
    )
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(prototxt)
    weight = np.arange(8, dtype=np.float32).reshape(2, 4)
    model = caffe_pb2.NetParameter()
    old = model.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    old.blobs.add(num=1, channels=1, height=2, width=4, data=weight.ravel().tolist())
    old.blobs.add(num=1, channels=1, height=1, width=2, data=[0.5, -0.5])
    weights = tmp_path / "old.caffemodel"
    weights.write_bytes(model.SerializeToString())

    exported = caffe_to_onnx(deploy, weights)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(_run(exported, {"x": x})["y"], [[6.5, 21.5]])
    assert any("pre-2015" in note for note in exported.notes)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_caffemodel_bytes_use_upstream_field_numbers(tmp_path: Path) -> None:
    """Bytes laid out by hand with BVLC Caffe's field numbers parse into the right fields."""
    floats = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    shape = _field(1, _varint(2) + _varint(3))  # BlobShape.dim = 1, packed int64
    weight = _field(7, shape) + _field(5, floats)  # BlobProto.shape = 7, .data = 5 (packed)
    legacy = b"".join(_varint(n << 3) + _varint(v) for n, v in [(1, 1), (2, 1), (3, 1), (4, 2)])
    bias = legacy + _field(5, struct.pack("<2f", 0.25, -0.25))  # num, channels, height, width
    layer = _field(1, b"ip") + _field(2, b"InnerProduct") + _field(7, weight) + _field(7, bias)
    data = _field(100, layer)  # NetParameter.layer = 100

    parsed = caffe_pb2.NetParameter.FromString(data)
    assert parsed.layer[0].name == "ip"
    assert list(parsed.layer[0].blobs[0].shape.dim) == [2, 3]
    assert parsed.layer[0].blobs[1].width == 2

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(
        _input("x", 1, 3)
        + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
        + "inner_product_param { num_output: 2 } }"
    )
    weights = tmp_path / "hand.caffemodel"
    weights.write_bytes(data)
    got = _run(caffe_to_onnx(deploy, weights), {"x": np.ones((1, 3), np.float32)})["y"]
    np.testing.assert_allclose(got, [[6.25, 14.75]])


# -- what cannot be converted --------------------------------------------------------------------

IP_NET = (
    _input("x", 1, 12)
    + """
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 10 } }
"""
)


def test_an_unsupported_layer_is_named_with_the_supported_types(tmp_path: Path) -> None:
    prototxt = (
        _input("x", 1, 3, 4, 4)
        + """
layer { name: "prelu1" type: "PReLU" bottom: "x" top: "y" }
"""
    )
    with pytest.raises(ConversionError) as caught:
        _convert(tmp_path, prototxt)
    message = str(caught.value)
    assert "'prelu1' (PReLU)" in message
    assert "Convolution" in message
    assert "InnerProduct" in message
    assert str(tmp_path / "deploy.prototxt") in message


def test_missing_weights_name_the_layer_and_the_expected_shape(tmp_path: Path) -> None:
    with pytest.raises(ConversionError) as caught:
        _convert(tmp_path, IP_NET, {})
    message = str(caught.value)
    assert "layer 'ip1' (InnerProduct) has no learned blobs" in message
    assert "weight (10, 12), bias (10)" in message
    assert "weights.caffemodel" in message


def test_a_blob_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    blobs = {"ip1": [np.zeros((10, 13), np.float32), np.zeros(10, np.float32)]}
    with pytest.raises(ConversionError) as caught:
        _convert(tmp_path, IP_NET, blobs)
    message = str(caught.value)
    assert "layer 'ip1' (InnerProduct)" in message
    assert "has shape (10, 13) with 130 values; expected shape (10, 12)" in message


def test_too_few_blobs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match=r"has 1 learned blob\(s\); expected 2"):
        _convert(tmp_path, IP_NET, {"ip1": [np.zeros((10, 12), np.float32)]})


def test_files_that_do_not_exist(tmp_path: Path) -> None:
    deploy, weights = _files(tmp_path, IP_NET, {})
    with pytest.raises(ConversionError, match="no such file"):
        caffe_to_onnx(tmp_path / "missing.prototxt", weights)
    with pytest.raises(ConversionError, match="no such file"):
        caffe_to_onnx(deploy, tmp_path / "missing.caffemodel")
    with pytest.raises(ConversionError, match="is a directory"):
        caffe_to_onnx(deploy, tmp_path)


def test_v1_prototxt_asks_for_caffes_upgrade_tool(tmp_path: Path) -> None:
    prototxt = """
input: "data"
input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         blobs_lr: 1 convolution_param { num_output: 2 kernel_size: 1 } }
"""
    with pytest.raises(ConversionError, match="upgrade_net_proto_text"):
        _convert(tmp_path, prototxt)


def test_files_that_are_not_caffe_files(tmp_path: Path) -> None:
    deploy, weights = _files(tmp_path, IP_NET, {})
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(ConversionError, match=r"not a Caffe \.caffemodel"):
        caffe_to_onnx(deploy, garbage)
    with pytest.raises(ConversionError, match="not a Caffe network definition"):
        caffe_to_onnx(garbage, weights)


def test_a_net_without_declared_inputs(tmp_path: Path) -> None:
    prototxt = 'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }'
    with pytest.raises(ConversionError, match=r"layer 'relu' \(ReLU\): bottom 'data' is not"):
        _convert(tmp_path, prototxt)


def test_a_reshape_that_fixes_the_batch_size(tmp_path: Path) -> None:
    prototxt = (
        _input("x", 1, 6)
        + """
layer { name: "r" type: "Reshape" bottom: "x" top: "y" reshape_param { shape { dim: 1 dim: 6 } } }
"""
    )
    with pytest.raises(ConversionError, match=r"layer 'r' \(Reshape\).*keep the batch axis"):
        _convert(tmp_path, prototxt)


def test_an_opset_below_13(tmp_path: Path) -> None:
    deploy, weights = _files(tmp_path, IP_NET, {})
    with pytest.raises(ConversionError, match="opset 11 is not supported"):
        caffe_to_onnx(deploy, weights, opset=11)
