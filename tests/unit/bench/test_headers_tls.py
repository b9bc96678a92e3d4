"""The bench's -H headers, TLS settings and refusals, as pure values: what each target puts on
the wire, what a saved command keeps, and the errors a user reads. No sockets."""

from __future__ import annotations

import pickle
import ssl
from pathlib import Path

import hpack
import pytest

from mserve.bench.connection import TlsConnect, connect, connector
from mserve.bench.fetch import Endpoint
from mserve.bench.h2frames import header_block
from mserve.bench.headers import (
    NEEDS_KEY,
    grpc_metadata,
    merged,
    parse_header,
    parse_headers,
    redact_command,
    refused,
)
from mserve.bench.targets.tfserving import TfServingTarget
from mserve.bench.targets.v2grpc import InferConnect, V2GrpcTarget, parse_address
from mserve.bench.targets.v2http import V2HttpTarget
from mserve.bench.tls import ClientTls, failure_reason, for_scheme
from mserve.bench.workload import InputSpec, random_samples
from mserve.errors import Forbidden, Unauthenticated

KEY = "Bearer 0123456789abcdef0123"
SPECS = [InputSpec("x", "FP32", (-1, 3))]


def head_of(request: bytes) -> list[str]:
    return request.partition(b"\r\n\r\n")[0].decode().split("\r\n")


def test_headers_parse_like_curls() -> None:
    assert parse_header(f"Authorization: {KEY}") == ("Authorization", KEY)
    assert parse_header("X-Api-Key:abc  ") == ("X-Api-Key", "abc")
    assert parse_header("X-Empty:") == ("X-Empty", "")
    assert parse_headers(["a: 1", "B: 2", "A: 3"]) == {"B": "2", "A": "3"}  # the last wins


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Authorization Bearer x", "expected 'Name: value'"),
        (": x", "expected 'Name: value'"),
        ("Bad Name: x", "not a valid header name"),
        ("X-A: one\r\nX-B: two", "control character"),
        ("X-A: caf\u00e9", "ASCII"),
        ("Host: other", "sets this header itself"),
        ("content-length: 3", "sets this header itself"),
    ],
)
def test_bad_headers_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_header(text)


def test_a_user_header_replaces_the_benchs_own_whatever_its_case() -> None:
    base = {"Content-Type": "application/json", "X-Keep": "1"}
    assert merged(base, {"content-type": "text/plain"}) == {
        "X-Keep": "1",
        "content-type": "text/plain",
    }


def test_grpc_metadata_is_lower_case_and_keeps_grpc_fields_its_own() -> None:
    assert grpc_metadata({"Authorization": KEY, "X-Trace": "t"}) == (
        ("authorization", KEY),
        ("x-trace", "t"),
    )
    for name in ("Content-Type", "te", "Connection"):
        with pytest.raises(ValueError, match="sets this header itself"):
            grpc_metadata({name: "x"})


def test_a_saved_command_keeps_header_names_and_drops_values() -> None:
    argv = ["bench", "u", "-H", f"Authorization: {KEY}", f"--header=X-Api-Key: {KEY}"]
    argv += [f"-HX-Token:{KEY}", "--header", "odd", "-m", "digits"]
    assert redact_command(argv) == [
        *("bench", "u", "-H", "Authorization: ***", "--header=X-Api-Key: ***"),
        *("-HX-Token: ***", "--header", "***", "-m", "digits"),
    ]


def test_refusals_say_what_to_pass() -> None:
    body = b'{"error": "this server needs an API key with the \'inference\' scope"}'
    error = refused(401, body, "GET https://h:1/v2/models/m")
    assert isinstance(error, Unauthenticated)
    assert str(error) == (
        "GET https://h:1/v2/models/m answered 401 (this server needs an API key with the "
        f"'inference' scope): {NEEDS_KEY}"
    )
    error = refused(403, "lacks the 'inference' scope", "ModelMetadata at grpcs://h:1", "DENIED")
    assert isinstance(error, Forbidden)
    assert str(error).startswith("ModelMetadata at grpcs://h:1 answered DENIED (lacks the")
    assert "-H 'Authorization: Bearer KEY'" in str(error)
    assert "answered 401: the server" in str(refused(401, b"", "GET u"))


@pytest.mark.parametrize("binary", [False, True])
def test_v2_requests_carry_the_headers(binary: bool) -> None:
    target = V2HttpTarget(
        "https://h:8443", model="m", binary=binary, headers={"Authorization": KEY}
    )
    target.metadata = {"outputs": [{"name": "y"}]}
    sample = random_samples(SPECS, 1, {}, seed=0, count=1)[0]
    head = head_of(target.encode_request("/v2/models/m/infer", sample, SPECS))
    assert f"Authorization: {KEY}" in head
    assert "Host: h:8443" in head
    assert target.tls == ClientTls()  # https with the system's CAs


def test_tfserving_requests_carry_the_headers_and_may_replace_content_type() -> None:
    headers = {"Authorization": KEY, "content-type": "application/json; charset=utf-8"}
    target = TfServingTarget("http://h:8501", model="m", headers=headers)
    sample = random_samples(SPECS, 1, {}, seed=0, count=1)[0]
    head = head_of(target.encode_request("/v1/models/m:predict", sample, SPECS))
    assert f"Authorization: {KEY}" in head
    assert [line for line in head if line.lower().startswith("content-type")] == [
        "content-type: application/json; charset=utf-8"
    ]
    assert target.tls is None


def test_grpc_header_block_carries_metadata_and_the_https_scheme() -> None:
    block = header_block("h:1", "/p", (("authorization", KEY), ("user-agent", "me")), "https")
    decoded = hpack.Decoder().decode(block)
    assert decoded[1] == (":scheme", "https")
    assert ("authorization", KEY) in decoded
    assert [v for k, v in decoded if k == "user-agent"] == ["me"]  # the user's replaces ours


def test_grpc_addresses_with_and_without_tls() -> None:
    assert parse_address("grpcs://h:9") == ("grpcs", "h", 9)
    assert parse_address("h") == ("grpc", "h", 8001)
    target = V2GrpcTarget("grpcs://h:9", model="m", headers={"Authorization": KEY})
    assert target.url == "grpcs://h:9"
    assert target.tls == ClientTls()
    assert target.call_metadata == (("authorization", KEY),)
    with pytest.raises(ValueError, match="give a grpcs:// URL"):
        V2GrpcTarget("grpc://h:9", model="m", tls=ClientTls(insecure=True))
    with pytest.raises(ValueError, match="too long for one HTTP/2 frame"):
        V2GrpcTarget("grpc://h:9", model="m", headers={"x-big": "a" * 20_000})


def test_endpoints_and_schemes() -> None:
    assert Endpoint.parse("https://h").port == 443
    assert str(Endpoint.parse("https://h:8443/base/")) == "https://h:8443/base"
    with pytest.raises(ValueError, match="expected http or https"):
        Endpoint.parse("ftp://h")
    tls = ClientTls(insecure=True)
    assert for_scheme("https", tls, "u") is tls
    assert for_scheme("http", None, "u") is None
    with pytest.raises(ValueError, match="give an https:// URL"):
        for_scheme("http", tls, "http://h:1")


def test_tls_options(tmp_path: Path) -> None:
    assert ClientTls.from_options(None, False) is None
    with pytest.raises(ValueError, match="not both"):
        ClientTls.from_options("ca.pem", True)
    with pytest.raises(ValueError, match="no such file"):
        ClientTls.from_options(str(tmp_path / "missing.pem"), False)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="not PEM CA certificates"):
        ClientTls.from_options(str(junk), False)
    insecure = ClientTls.from_options(None, True)
    assert insecure is not None
    context = insecure.context("h2")
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname
    assert insecure.context("h2") is context  # built once per process and protocol
    strict = ClientTls().context("http/1.1")
    assert strict.verify_mode == ssl.CERT_REQUIRED
    assert strict.check_hostname


def test_tls_failures_name_the_options() -> None:
    refused_cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused_cert.verify_message = "unable to get local issuer certificate"
    assert failure_reason(refused_cert) == (
        "the server's certificate was not verified (unable to get local issuer certificate); "
        "pass --ca-file CA.pem (or --insecure to skip verification, for testing only)"
    )
    assert "is this a TLS port?" in failure_reason(ssl.SSLError(1, "wrong version number"))


def test_connectors_pickle_for_generator_processes() -> None:
    tls = ClientTls(insecure=True)
    assert connector(None) is connect
    assert pickle.loads(pickle.dumps(connector(tls))) == TlsConnect(tls)
    infer = InferConnect((("authorization", KEY),), tls)
    assert pickle.loads(pickle.dumps(infer)) == infer
