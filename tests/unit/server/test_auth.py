"""API key files, scopes and the gRPC timeout header, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from mserve.errors import ConfigError, Forbidden, Unauthenticated
from mserve.server.auth import ApiKeys, bearer, load_keys, parse_keys
from mserve.server.grpc.h2streams import timeout_ns

KEY = "k" * 16


def test_keys_parse_with_comments_stars_and_semicolons() -> None:
    keys = parse_keys(f"# comment\n{KEY}  inference,metrics # trailing\n\n{'a' * 20} *", "f")
    assert keys == {
        KEY: frozenset({"inference", "metrics"}),
        "a" * 20: frozenset({"inference", "management", "metrics"}),
    }
    assert parse_keys(f"{KEY} inference; {'b' * 16} metrics", "env") == {
        KEY: frozenset({"inference"}),
        "b" * 16: frozenset({"metrics"}),
    }


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (f"{KEY}", "line 1': expected 'KEY SCOPE[,SCOPE...]' (two fields), got '1 fields'"),
        ("short inference", "at least 16 characters"),
        (f"{KEY} inference,root", "scopes among inference, management, metrics or *, got 'root'"),
        (f"{KEY} inference\n{KEY} metrics", "line 2': expected each key once"),
    ],
)
def test_bad_key_lines_name_the_line_and_never_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_keys(text, "keys.txt")
    assert words in str(info.value)
    assert KEY not in str(info.value)


def test_check_refuses_missing_unknown_and_unscoped_keys() -> None:
    keys = ApiKeys({KEY: frozenset({"inference"})})
    keys.check(KEY.encode(), "inference")
    with pytest.raises(Unauthenticated, match="needs an API key with the 'metrics' scope"):
        keys.check(None, "metrics")
    with pytest.raises(Unauthenticated, match="not valid"):
        keys.check(b"x" * 16, "inference")
    with pytest.raises(Forbidden, match="lacks the 'management' scope"):
        keys.check(KEY.encode(), "management")
    ApiKeys({}).check(None, "management")  # no keys: open


def test_bearer_takes_only_the_bearer_scheme() -> None:
    assert bearer(b"Bearer abc") == b"abc"
    assert bearer(b"bearer   abc ") == b"abc"
    assert bearer(b"Basic abc") is None
    assert bearer(b"Bearer") is None
    assert bearer(None) is None


def test_keys_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    env = f"{KEY} metrics"
    assert len(load_keys("", env)) == 1
    path = tmp_path / "keys"
    path.write_text(f"{'z' * 16} *\n{'y' * 16} inference\n")
    assert len(load_keys(str(path), env)) == 2  # the file wins over the variable
    assert not load_keys("", "").enabled
    with pytest.raises(ConfigError, match="a readable file"):
        load_keys(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        (b"100m", 100_000_000),
        (b"2S", 2_000_000_000),
        (b"1H", 3600 * 10**9),
        (b"5M", 300 * 10**9),
        (b"250u", 250_000),
        (b"7n", 7),
        (b"99999999m", 99_999_999_000_000),
        (b"123456789m", None),  # nine digits
        (b"10x", None),
        (b"m", None),
        (b"-1S", None),
    ],
)
def test_grpc_timeout_header(value: bytes, ns: int | None) -> None:
    assert timeout_ns(value) == ns


def test_a_key_written_where_a_scope_goes_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_keys(f"{KEY} {'s' * 20}", "keys.txt")
    assert "(a long word)" in str(info.value)
    assert "s" * 20 not in str(info.value)
