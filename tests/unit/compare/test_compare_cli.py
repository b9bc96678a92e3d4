"""``mserve compare``'s options, refused before any system starts (exit 2), and its help."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mserve.cli.exit_codes import USAGE
from mserve.cli.main import main
from mserve.compare import launchers


@pytest.fixture
def model(tmp_path: Path, onnx_factory) -> Path:
    path = tmp_path / "fixed.onnx"
    path.write_bytes(onnx_factory.identity("FP32", shape=(1, 2)))  # no batch axis
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--systems", "mserve,nosuch"], "unknown system nosuch; known: mserve"),
        (["--systems", "mserve,mserve"], "a system named twice"),
        (["--server-cpus", "999"], "--server-cpus: CPU 999 is not usable"),
        (["--server-cpus", "0", "--bench-cpus", "0"], "share CPU 0"),
        (["--slo", "p99 under 5"], "PERCENTILE=VALUE"),
        (["--batching"], "max_batch_size 0 (no batch axis): there is nothing to batch"),
        (["--threads", "0"], "threads must be at least 1"),
        (["--duration", "0"], "--duration must be above 0"),
    ],
)
def test_bad_options_exit_2_before_anything_runs(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    if "share CPU" in message and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: the server and the bench share it")
    out = tmp_path / "out"
    assert main(["compare", str(model), "--out", str(out), *args]) == USAGE
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_model_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == USAGE
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("levels", ["0", "1,x", ""])
def test_bad_concurrency_is_an_argparse_error(model: Path, levels: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(model), "--out", "o", "--concurrency", levels])
    assert exit_.value.code == USAGE


def test_help_lists_the_systems_and_the_setup_script(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "scripts/compare-envs SYSTEM" in text
    for name in launchers.ALL:  # names, in the order --systems all runs them
        assert f"\n  {name} " in text
