"""config.yaml parsing: every error names the file, the field and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from mserve.config import (
    DriftConfig,
    DynamicBatching,
    ModelConfig,
    RuntimeOptions,
    VersionPolicy,
    load_model_config,
    parse_model_config,
    write_model_config,
)
from mserve.errors import ConfigError
from mserve.protocol import TensorSpec

SOURCE = "models/m/config.yaml"
TENSOR = {"name": "x", "datatype": "FP32", "shape": [-1, 4]}


def parse(raw: object) -> ModelConfig:
    return parse_model_config(raw, SOURCE, "m")


def test_minimal_config_gets_defaults() -> None:
    config = parse({})
    assert config == ModelConfig(name="m")
    assert config.version_policy == VersionPolicy("latest", 1)
    assert config.runtime == RuntimeOptions()


def test_full_config_is_read_field_by_field() -> None:
    config = parse(
        {
            "name": "m",
            "backend": "onnxruntime",
            "max_batch_size": 8,
            "instance_count": 2,
            "inputs": [TENSOR],
            "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
            "runtime": {
                "intra_op_threads": 2,
                "inter_op_threads": 1,
                "execution_providers": ["CPUExecutionProvider"],
                "graph_optimization_level": "basic",
                "warmup": False,
            },
            "version_policy": {"specific": [1, 3]},
        }
    )
    assert config.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    assert config.outputs == (TensorSpec("y", "INT64", (-1,)),)
    assert (config.max_batch_size, config.instance_count) == (8, 2)
    assert config.runtime == RuntimeOptions(2, 1, ("CPUExecutionProvider",), "basic", False)
    assert config.version_policy == VersionPolicy("specific", 1, (1, 3))


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        ([1, 2], "(top level)", "a mapping"),
        ({"nmae": "m"}, "nmae", "one of the known fields"),
        ({"name": ""}, "name", "a non-empty string"),
        ({"name": "other"}, "name", "the directory's name 'm'"),
        ({"backend": "tensorrt"}, "backend", "one of onnxruntime"),
        ({"max_batch_size": -1}, "max_batch_size", "an integer >= 0"),
        ({"max_batch_size": "lots"}, "max_batch_size", "an integer >= 0"),
        ({"max_batch_size": True}, "max_batch_size", "an integer >= 0"),
        ({"max_batch_size": 1.5}, "max_batch_size", "an integer >= 0"),
        ({"instance_count": 0}, "instance_count", "an integer >= 1"),
        ({"inputs": {"x": 1}}, "inputs", "a list of {name, datatype, shape}"),
        ({"inputs": ["x"]}, "inputs[0]", "a mapping"),
        ({"inputs": [{**TENSOR, "dims": [1]}]}, "inputs[0].dims", "one of the known fields"),
        ({"inputs": [{**TENSOR, "name": 3}]}, "inputs[0].name", "a non-empty string"),
        ({"inputs": [{**TENSOR, "datatype": "FLOAT"}]}, "inputs[0].datatype", "a V2 datatype"),
        ({"inputs": [{**TENSOR, "datatype": ["FP32"]}]}, "inputs[0].datatype", "a V2 datatype"),
        ({"inputs": [{**TENSOR, "datatype": {"t": 1}}]}, "inputs[0].datatype", "a V2 datatype"),
        ({"inputs": [{**TENSOR, "shape": [-2]}]}, "inputs[0].shape", "a list of dimensions"),
        ({"inputs": [{**TENSOR, "shape": "4"}]}, "inputs[0].shape", "a list of dimensions"),
        ({"inputs": [{**TENSOR, "shape": [True]}]}, "inputs[0].shape", "a list of dimensions"),
        ({"inputs": [TENSOR, TENSOR]}, "inputs[1].name", "a name not used twice"),
        (
            {"max_batch_size": 4, "outputs": [{**TENSOR, "shape": [4]}]},
            "outputs[0].shape",
            "-1 as the first dimension, the batch dimension",
        ),
        ({"instance_kind": "gpu"}, "instance_kind", "one of auto, thread, process"),
        ({"dynamic_batching": {}}, "max_batch_size", "a value >= 1 when dynamic_batching is set"),
        ({"max_batch_size": 8, "dynamic_batching": []}, "dynamic_batching", "a mapping"),
        (
            {"max_batch_size": 8, "dynamic_batching": {"max_delay": 1}},
            "dynamic_batching.max_delay",
            "one of the known fields",
        ),
        (
            {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": -1}},
            "dynamic_batching.max_queue_delay_microseconds",
            "an integer >= 0",
        ),
        (
            {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_sizes": [4, 16]}},
            "dynamic_batching.preferred_batch_sizes",
            "sizes no larger than max_batch_size 8",
        ),
        (
            {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_sizes": [4, 4]}},
            "dynamic_batching.preferred_batch_sizes",
            "a list of distinct batch sizes >= 1",
        ),
        (
            {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_sizes": 4}},
            "dynamic_batching.preferred_batch_sizes",
            "a list of distinct batch sizes >= 1",
        ),
        (
            {"max_batch_size": 8, "dynamic_batching": {"max_queue_size": "big"}},
            "dynamic_batching.max_queue_size",
            "an integer >= 0",
        ),
        (
            {"max_batch_size": 8, "dynamic_batching": {"default_timeout_microseconds": 0.5}},
            "dynamic_batching.default_timeout_microseconds",
            "an integer >= 0",
        ),
        ({"runtime": []}, "runtime", "a mapping"),
        ({"runtime": {"threads": 2}}, "runtime.threads", "one of the known fields"),
        ({"runtime": {"intra_op_threads": -1}}, "runtime.intra_op_threads", "an integer >= 0"),
        (
            {"runtime": {"execution_providers": "CUDA"}},
            "runtime.execution_providers",
            "a list of provider names",
        ),
        (
            {"runtime": {"graph_optimization_level": "max"}},
            "runtime.graph_optimization_level",
            "one of disable, basic, extended, all",
        ),
        ({"runtime": {"warmup": "yes"}}, "runtime.warmup", "true or false"),
        ({"runtime": {"execution": "fast"}}, "runtime.execution", "one of auto, thread, inline"),
        ({"version_policy": "newest"}, "version_policy", "a mapping"),
        ({"version_policy": {"latest": 1, "all": {}}}, "version_policy", "{latest: N}"),
        ({"version_policy": {"oldest": 1}}, "version_policy", "{specific: [versions]}"),
        ({"version_policy": {"latest": 0}}, "version_policy.latest", "an integer >= 1"),
        ({"version_policy": {"specific": []}}, "version_policy.specific", "a non-empty list"),
        ({"version_policy": {"specific": [0]}}, "version_policy.specific", "version numbers > 0"),
        ({"drift": "ref.npz"}, "drift", "a mapping"),
        ({"drift": {}}, "drift.reference", "the name of a .npz file beside config.yaml"),
        ({"drift": {"reference": "ref.csv"}}, "drift.reference", "the name of a .npz file"),
        ({"drift": {"reference": "../x.npz"}}, "drift.reference", "the name of a .npz file"),
        ({"drift": {"reference": "r.npz", "bins": 5}}, "drift.bins", "one of the known fields"),
        (
            {"drift": {"reference": "r.npz", "half_life_s": 0}},
            "drift.half_life_s",
            "a number of seconds > 0",
        ),
    ],
)
def test_each_error_names_file_field_and_expectation(
    raw: object, field: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(raw)
    err = info.value
    assert (err.source, err.field) == (SOURCE, field)
    assert expected in err.expected
    assert str(err).startswith(f"{SOURCE}: field '{field}': expected ")
    assert expected in str(err)


def test_error_message_shows_the_offending_value() -> None:
    with pytest.raises(ConfigError, match=r"got 'lots'$"):
        parse({"max_batch_size": "lots"})


@pytest.mark.parametrize(
    ("raw", "policy", "selected"),
    [
        ({}, VersionPolicy("latest", 1), [3]),
        ({"version_policy": {"latest": 2}}, VersionPolicy("latest", 2), [2, 3]),
        ({"version_policy": {"latest": 5}}, VersionPolicy("latest", 5), [1, 2, 3]),
        ({"version_policy": "all"}, VersionPolicy("all"), [1, 2, 3]),
        ({"version_policy": {"all": {}}}, VersionPolicy("all"), [1, 2, 3]),
        (
            {"version_policy": {"specific": [3, 1, 7]}},
            VersionPolicy("specific", 1, (3, 1, 7)),
            [1, 3],
        ),
    ],
)
def test_version_policy_parsing_and_selection(
    raw: dict[str, object], policy: VersionPolicy, selected: list[int]
) -> None:
    config = parse(raw)
    assert config.version_policy == policy
    assert config.version_policy.select([3, 1, 2]) == selected


def test_latest_policy_selects_the_highest_even_when_numbers_are_sparse() -> None:
    assert VersionPolicy("latest", 2).select([10, 2, 9, 100]) == [10, 100]
    assert VersionPolicy("specific", specific=(4,)).select([1, 2, 3]) == []


def test_load_reads_yaml_and_an_empty_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("max_batch_size: 4\ninputs:\n  - {name: x, datatype: FP32, shape: [-1, 4]}\n")
    config = load_model_config(path, "m")
    assert config.max_batch_size == 4
    assert config.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    path.write_text("")
    assert load_model_config(path, "m") == ModelConfig(name="m")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"inputs: [unclosed\n", "valid YAML"),
        (b"name: m\n\tmax_batch_size: 1\n", "valid YAML"),
        (b"max_batch_size: \xff\xfe\n", "UTF-8 text"),
    ],
)
def test_unreadable_file_is_a_config_error(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_model_config(path, "m")
    assert (info.value.source, info.value.field) == (str(path), "(file)")
    assert expected in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with pytest.raises(ConfigError, match="a readable file"):
        load_model_config(path, "m")


def test_dynamic_batching_section_is_read_in_microseconds_and_sizes_sorted() -> None:
    config = parse(
        {
            "max_batch_size": 32,
            "dynamic_batching": {
                "max_queue_delay_microseconds": 2000,
                "preferred_batch_sizes": [32, 8, 16],
                "max_queue_size": 256,
                "default_timeout_microseconds": 0,
            },
            "instance_count": 2,
            "instance_kind": "process",
        }
    )
    assert config.dynamic_batching == DynamicBatching(2000, (8, 16, 32), 256, 0)
    assert (config.instance_count, config.instance_kind) == (2, "process")


@pytest.mark.parametrize("section", [None, {}])
def test_an_empty_dynamic_batching_section_turns_batching_on_with_defaults(
    section: object,
) -> None:
    config = parse({"max_batch_size": 4, "dynamic_batching": section})
    assert config.dynamic_batching == DynamicBatching()
    assert parse({"max_batch_size": 4}).dynamic_batching is None


def test_written_config_reads_back_identical(tmp_path: Path) -> None:
    for policy in (
        VersionPolicy("latest", 3),
        VersionPolicy("all"),
        VersionPolicy("specific", 1, (2, 5)),
    ):
        config = ModelConfig(
            name="m",
            inputs=(TensorSpec("x", "BYTES", (-1, 2)),),
            outputs=(TensorSpec("y", "FP16", (-1,)),),
            max_batch_size=16,
            instance_count=3,
            instance_kind="thread",
            dynamic_batching=DynamicBatching(100, (4, 8), 64, 5000) if policy.latest == 1 else None,
            runtime=RuntimeOptions(1, 2, ("CPUExecutionProvider",), "extended", False),
            version_policy=policy,
        )
        path = tmp_path / "config.yaml"
        write_model_config(path, config)
        assert load_model_config(path, "m") == config


def test_drift_section_is_read_and_written_back(tmp_path: Path) -> None:
    config = parse({"drift": {"reference": "reference.npz", "half_life_s": 30}})
    assert config.drift == DriftConfig("reference.npz", 30.0)
    assert parse({"drift": {"reference": "r.npz"}}).drift == DriftConfig("r.npz", 60.0)
    path = tmp_path / "config.yaml"
    write_model_config(path, config)
    assert load_model_config(path, "m").drift == config.drift
