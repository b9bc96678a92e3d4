"""When a batch leaves and how many requests it takes."""

from __future__ import annotations

import pytest

from mserve.config import DynamicBatching, ModelConfig
from mserve.server.batching.policy import BatchPolicy, take


def test_no_section_means_no_policy() -> None:
    assert BatchPolicy.from_config(ModelConfig("m", max_batch_size=8)) is None


def test_policy_from_config_converts_microseconds() -> None:
    config = ModelConfig(
        "m",
        max_batch_size=32,
        dynamic_batching=DynamicBatching(2000, (16, 8), 256, 500),
    )
    assert BatchPolicy.from_config(config) == BatchPolicy(32, 2_000_000, (8, 16), 256, 500_000)


@pytest.mark.parametrize(
    ("rows", "full"),
    [(1, None), (7, None), (8, 8), (15, 8), (16, 16), (31, 16), (32, 32), (40, 32)],
)
def test_a_batch_is_full_at_max_or_the_largest_preferred_size_reached(
    rows: int, full: int | None
) -> None:
    assert BatchPolicy(32, preferred=(8, 16)).full(rows) == full


def test_without_preferred_sizes_only_max_is_full() -> None:
    policy = BatchPolicy(4)
    assert [policy.full(r) for r in (1, 3, 4, 9)] == [None, None, 4, 4]


def test_waits_only_while_more_are_coming_and_within_the_delay() -> None:
    policy = BatchPolicy(32, max_queue_delay_ns=2_000_000)
    assert policy.should_wait(0, more_coming=False) == 0  # a lone client is never held back
    assert policy.should_wait(500_000, more_coming=True) == 1_500_000
    assert policy.should_wait(2_000_000, more_coming=True) == 0
    assert BatchPolicy(32).should_wait(0, more_coming=True) == 0  # no delay configured


@pytest.mark.parametrize(
    ("rows", "limit", "n"),
    [
        ([1, 1, 1, 1], 3, 3),
        ([2, 2, 2], 5, 2),  # never more rows than the limit
        ([40, 1], 32, 1),  # a request larger than the limit still goes, alone
        ([3, 1, 1], 4, 2),  # arrival order kept: no skipping ahead to fill the batch
        ([], 8, 0),
    ],
)
def test_take_fills_in_arrival_order_up_to_the_limit(rows: list[int], limit: int, n: int) -> None:
    assert take(rows, limit) == n
