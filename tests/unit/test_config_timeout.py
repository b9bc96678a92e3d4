"""config.yaml's ``runtime.timeout_s``: a number of seconds >= 0, off by default; a timeout makes
``execution: auto`` run on threads and refuses ``execution: inline``; it survives a round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from mserve.config import ModelConfig, RuntimeOptions, load_model_config, parse_model_config
from mserve.config import write_model_config as write
from mserve.errors import ConfigError

SOURCE = "models/m/config.yaml"


def parse(runtime: object) -> ModelConfig:
    return parse_model_config({"runtime": runtime}, SOURCE, "m")


def test_no_timeout_by_default() -> None:
    assert parse({}).runtime.timeout_s == 0.0
    assert parse({"timeout_s": 0}).runtime == RuntimeOptions()


@pytest.mark.parametrize(("value", "seconds"), [(2, 2.0), (0.25, 0.25), (600, 600.0)])
def test_a_timeout_in_seconds(value: float, seconds: float) -> None:
    runtime = parse({"timeout_s": value}).runtime
    assert runtime.timeout_s == seconds
    assert runtime.execution == "thread"  # auto: a watched run never blocks the event loop


@pytest.mark.parametrize("value", [-1, "2s", True, None, [1], float("nan"), float("inf")])
def test_a_bad_timeout_names_the_field(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"timeout_s": value})
    assert info.value.field == "runtime.timeout_s"
    assert str(info.value).startswith(
        f"{SOURCE}: field 'runtime.timeout_s': expected a number of seconds >= 0 (0: no timeout)"
    )


def test_a_timeout_refuses_inline_execution() -> None:
    with pytest.raises(ConfigError) as info:
        parse({"timeout_s": 1, "execution": "inline"})
    assert info.value.field == "runtime.execution"
    assert "thread or auto when runtime.timeout_s is set" in str(info.value)
    assert parse({"timeout_s": 1, "execution": "thread"}).runtime.execution == "thread"
    assert parse({"execution": "inline"}).runtime.execution == "inline"  # no timeout: allowed


def test_the_timeout_survives_a_round_trip(tmp_path: Path) -> None:
    config = ModelConfig("m", runtime=RuntimeOptions(timeout_s=1.5, execution="thread"))
    write(tmp_path / "config.yaml", config)
    assert "timeout_s: 1.5" in (tmp_path / "config.yaml").read_text()
    assert load_model_config(tmp_path / "config.yaml", "m") == config
