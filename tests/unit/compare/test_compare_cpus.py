"""The cores of the server and of the load generator."""

from __future__ import annotations

import pytest

from mserve.compare.cpus import CpuSplit, cpu_list, parse_cpus, split


@pytest.mark.parametrize(
    ("text", "cores"),
    [("0", (0,)), ("0,2", (0, 2)), ("1-3", (1, 2, 3)), ("3,0-1", (0, 1, 3)), ("2, 2", (2,))],
)
def test_parse_cpus(text: str, cores: tuple[int, ...]) -> None:
    assert parse_cpus(text) == cores


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "0,,1"])
def test_parse_cpus_refuses_what_taskset_would(text: str) -> None:
    with pytest.raises(ValueError, match=r"CPU list|backwards"):
        parse_cpus(text)


def test_cpu_list_folds_runs() -> None:
    assert cpu_list([5, 0, 1, 2]) == "0-2,5"
    assert cpu_list([3]) == "3"


def test_default_split_gives_the_server_the_first_half() -> None:
    assert split([0, 1], None, None) == CpuSplit("0", "1")
    assert split(range(8), None, None) == CpuSplit("0-3", "4-7")
    assert split([0, 1, 2], None, None).server_count == 1


def test_one_core_is_shared() -> None:
    assert split([0], None, None) == CpuSplit("0", "0")


def test_given_lists_are_kept() -> None:
    assert split(range(4), "2", None) == CpuSplit("2", "0-1,3")
    assert split(range(4), "0-1", "3") == CpuSplit("0-1", "3")


def test_cores_outside_the_usable_ones_are_refused() -> None:
    with pytest.raises(ValueError, match="--server-cpus: CPU 7 is not usable"):
        split([0, 1], "7", None)


def test_shared_cores_are_refused() -> None:
    with pytest.raises(ValueError, match="share CPU 1"):
        split(range(4), "0-1", "1-2")
