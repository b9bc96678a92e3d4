"""The model repository on disk: scanning, version folders, version policy, broken models."""

from __future__ import annotations

from pathlib import Path

import pytest

from mserve.config import ModelConfig, VersionPolicy, load_model_config
from mserve.errors import RepositoryError
from mserve.protocol import TensorSpec
from mserve.repository import Repository, valid_model_name, write_model

MODEL = b"not parsed by the scan"


def make(root: Path, name: str, versions: list[str], config: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for v in versions:
        (folder / v).mkdir()
        (folder / v / "model.onnx").write_bytes(MODEL)
    if config is not None:
        (folder / "config.yaml").write_text(config)
    return folder


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="not a directory; expected a model repository"):
        Repository(tmp_path / "missing")


def test_names_are_model_folders_sorted_without_hidden_ones_or_files(tmp_path: Path) -> None:
    for name in ("zeta", "alpha", ".git", "mid"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("x")
    assert Repository(tmp_path).names() == ["alpha", "mid", "zeta"]


def test_without_config_the_latest_version_is_served(tmp_path: Path) -> None:
    folder = make(tmp_path, "m", ["1", "2", "10"])
    src = Repository(tmp_path).source("m")
    assert src.ok
    assert src.error is None
    assert src.config is None
    assert not src.has_config_file
    assert src.available == (1, 2, 10)
    assert src.versions == {10: folder / "10" / "model.onnx"}


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ("version_policy: {latest: 2}", [2, 3]),
        ("version_policy: {latest: 9}", [1, 2, 3]),
        ("version_policy: all", [1, 2, 3]),
        ("version_policy: {all: {}}", [1, 2, 3]),
        ("version_policy: {specific: [1, 3]}", [1, 3]),
        ("version_policy: {specific: [2, 99]}", [2]),
        ("", [3]),
    ],
)
def test_version_policy_selects_the_versions_served(
    tmp_path: Path, policy: str, served: list[int]
) -> None:
    folder = make(tmp_path, "m", ["1", "2", "3"], config=policy)
    src = Repository(tmp_path).source("m")
    assert src.ok, src.error
    assert src.has_config_file
    assert src.available == (1, 2, 3)
    assert src.versions == {v: folder / str(v) / "model.onnx" for v in served}


def test_policy_that_selects_nothing_is_an_error_naming_the_versions(tmp_path: Path) -> None:
    make(tmp_path, "m", ["1", "2"], config="version_policy: {specific: [5]}")
    src = Repository(tmp_path).source("m")
    assert not src.ok
    assert src.versions == {}
    assert src.error == (
        f"{tmp_path / 'm'}: the version policy selects none of the versions present (1, 2)"
    )


def test_folders_that_are_not_versions_are_ignored(tmp_path: Path) -> None:
    folder = make(tmp_path, "m", ["1", "0", "latest", "-3", "2"])
    (folder / "3").mkdir()  # a version folder without its model file
    (folder / "7").write_text("a file, not a folder")
    src = Repository(tmp_path).source("m")
    assert src.available == (1, 2)
    assert src.versions == {2: folder / "2" / "model.onnx"}


@pytest.mark.parametrize("odd", ["01", "002", "\u0663"])  # leading zeros, an Arabic-Indic three
def test_version_folder_names_must_be_plain_decimal(tmp_path: Path, odd: str) -> None:
    # the folder a version is loaded from is the one its number names: "01" is not "1"
    folder = make(tmp_path, "m", ["1", odd])
    src = Repository(tmp_path).source("m")
    assert src.available == (1,)
    assert src.versions == {1: folder / "1" / "model.onnx"}
    assert all(path.is_file() for path in src.versions.values())


def test_a_model_without_versions_says_what_was_expected(tmp_path: Path) -> None:
    make(tmp_path, "m", [])
    src = Repository(tmp_path).source("m")
    assert not src.ok
    assert src.error == (
        f"{tmp_path / 'm'}: no version folder with a model.onnx; expected e.g. 1/model.onnx"
    )


def test_broken_config_is_recorded_and_the_other_models_still_scan(tmp_path: Path) -> None:
    make(tmp_path, "good", ["1"])
    make(tmp_path, "broken", ["1"], config="max_batch_size: lots\n")
    make(tmp_path, "typo", ["1"], config="max_batch: 4\n")
    by_name = {s.name: s for s in Repository(tmp_path).scan()}
    assert sorted(by_name) == ["broken", "good", "typo"]
    assert by_name["good"].ok
    broken = by_name["broken"]
    assert not broken.ok
    assert broken.has_config_file
    assert broken.versions == {}
    assert broken.error == (
        f"{tmp_path / 'broken' / 'config.yaml'}: field 'max_batch_size': "
        "expected an integer >= 0, got 'lots'"
    )
    typo = by_name["typo"].error or ""
    assert "config.yaml: field 'max_batch': expected one of the known fields" in typo
    assert "max_batch_size" in typo


def test_unknown_folder_or_bad_name_raises(tmp_path: Path) -> None:
    repo = Repository(tmp_path)
    with pytest.raises(RepositoryError, match="no such model folder"):
        repo.source("absent")
    for bad in ("..", ".hidden", "a/b", "", "x" * 129):
        with pytest.raises(RepositoryError, match="not a valid model name"):
            repo.source(bad)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("digits", True),
        ("resnet-50_v2.onnx", True),
        ("9lives", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("..", False),
        (".", False),
        ("_private", False),
        ("a b", False),
        ("a/b", False),
        ("a\\b", False),
        ("", False),
    ],
)
def test_valid_model_name(name: str, ok: bool) -> None:
    assert valid_model_name(name) is ok


def test_write_model_places_file_and_config(tmp_path: Path) -> None:
    config = ModelConfig(
        name="m",
        inputs=(TensorSpec("x", "FP32", (-1, 2)),),
        max_batch_size=4,
        version_policy=VersionPolicy("all"),
    )
    target = write_model(tmp_path, config, 3, b"bytes of a model")
    assert target == tmp_path / "m" / "3" / "model.onnx"
    assert target.read_bytes() == b"bytes of a model"
    assert sorted(p.name for p in (tmp_path / "m" / "3").iterdir()) == ["model.onnx"]  # no .tmp
    assert load_model_config(tmp_path / "m" / "config.yaml", "m") == config
    src = Repository(tmp_path).source("m")
    assert src.config == config
    assert src.versions == {3: target}


def test_write_model_refuses_an_unsafe_name(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="not a valid model name"):
        write_model(tmp_path, ModelConfig(name="../escape"), 1, b"x")
    assert list(tmp_path.iterdir()) == []
