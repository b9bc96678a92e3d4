"""API keys with scopes over HTTP and gRPC, TLS for both with tritonclient, and the management
API off unless enabled: a real server, real clients, a certificate authority made in the test."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pki import make_pki

from mserve.server.process import ServerProcess, free_port

INFER_KEY = "infer-only-0123456789abcdef"
METRICS_KEY = "metrics-only-0123456789abcdef"
ADMIN_KEY = "admin-all-scopes-0123456789abcdef"
KEYS_FILE = f"""# key  scopes
{INFER_KEY}   inference
{METRICS_KEY} metrics
{ADMIN_KEY}   *
"""


class Secure:
    """The secured server: HTTPS and gRPC over TLS, three keys, management on."""

    def __init__(self, process: ServerProcess, grpc_port: int, ca: Path, digits: Any) -> None:
        self.process = process
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.ca = ca
        self.digits = digits
        self.context = ssl.create_default_context(cafile=str(ca))

    def request(
        self, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.process.port, context=self.context, timeout=30
        )
        try:
            conn.request(method, path, body=body.encode(), headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, place: Any, digits_model: Any, onnx_factory: Any
) -> Iterator[Secure]:
    root = tmp_path_factory.mktemp("secure")
    repo = root / "models"
    place(repo, "digits", {1: digits_model.onnx}, config=digits_model.config)
    place(repo, "plus1", {1: onnx_factory.add_const(1.0)})
    ca, cert, key = make_pki(root)
    keys = root / "keys.txt"
    keys.write_text(KEYS_FILE)
    grpc_port = free_port()
    args = ["--grpc-port", str(grpc_port), "--api-keys", str(keys), "--enable-management"]
    args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    process = ServerProcess(repo, args=args, ca_file=str(ca))
    process.start(timeout=60)
    try:
        yield Secure(process, grpc_port, ca, digits_model)
    finally:
        process.stop()


def digits_body(x: np.ndarray) -> str:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ]
        }
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metadata(key: str) -> dict[str, str]:
    """gRPC metadata keys are lower-case."""
    return {"authorization": f"Bearer {key}"}


# (method, path, body, scope) for every protected HTTP route
ROUTES = [
    ("GET", "/v2", "", "inference"),
    ("GET", "/v2/models/digits", "", "inference"),
    ("GET", "/v2/models/digits/versions/1", "", "inference"),
    ("GET", "/v2/models/digits/ready", "", "inference"),
    ("GET", "/v2/models/digits/config", "", "inference"),
    ("POST", "/v2/models/digits/infer", "DIGITS", "inference"),
    ("GET", "/v1/models/digits", "", "inference"),
    ("GET", "/v1/models/digits/metadata", "", "inference"),
    ("POST", "/v1/models/plus1:predict", '{"instances": [[1.0]]}', "inference"),
    ("GET", "/v2/models/stats", "", "metrics"),
    ("GET", "/v2/models/digits/stats", "", "metrics"),
    ("GET", "/metrics", "", "metrics"),
    ("GET", "/dashboard", "", "metrics"),
    ("GET", "/dashboard/data", "", "metrics"),
    ("POST", "/v2/repository/index", "{}", "management"),
    ("POST", "/v2/repository/models/plus1/load", "", "management"),
    ("GET", "/v2/no/such/route", "", "inference"),  # unknown routes reveal nothing keyless
]
KEY_OF = {"inference": INFER_KEY, "metrics": METRICS_KEY, "management": ADMIN_KEY}
OTHER_KEY = {"inference": METRICS_KEY, "metrics": INFER_KEY, "management": INFER_KEY}


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_every_protected_route_refuses_missing_wrong_and_unscoped_keys(
    secure: Secure, method: str, path: str, body: str, scope: str
) -> None:
    if body == "DIGITS":
        body = digits_body(secure.digits.x_test[:2])
    status, headers, text = secure.request(method, path, body)
    assert status == 401, text
    assert headers["www-authenticate"].startswith("Bearer")
    assert f"'{scope}' scope" in json.loads(text)["error"]

    status, _, text = secure.request(method, path, body, bearer("not-a-key-of-this-server"))
    assert (status, json.loads(text)) == (401, {"error": "the API key is not valid"})

    status, _, text = secure.request(method, path, body, {"Authorization": f"Basic {INFER_KEY}"})
    assert status == 401, "only the Bearer scheme carries a key"

    status, _, text = secure.request(method, path, body, bearer(OTHER_KEY[scope]))
    assert status == 403, text
    assert f"lacks the '{scope}' scope" in json.loads(text)["error"]

    status, _, text = secure.request(method, path, body, bearer(KEY_OF[scope]))
    expected = 404 if "no/such" in path else 200
    assert status == expected, text
    status, _, _ = secure.request(method, path, body, {"X-API-Key": KEY_OF[scope]})
    assert status == expected


def test_health_probes_and_openapi_are_open(secure: Secure) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        status, _, _ = secure.request("GET", path)
        assert status == 200, path
    status, _, _ = secure.request("GET", "/openapi.json")
    assert status in (200, 404)  # open either way: never 401


def test_a_predict_over_https_with_tritonclient_http(secure: Secure) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(
        f"127.0.0.1:{secure.process.port}",
        ssl=True,
        ssl_context_factory=lambda: ssl.create_default_context(cafile=str(secure.ca)),
    )
    try:
        x = secure.digits.x_test[:16]
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer("digits", [inp], headers=bearer(INFER_KEY))
        labels = result.as_numpy("label")
        assert labels is not None
        assert labels.ravel().tolist() == secure.digits.estimator.predict(x).tolist()
        with pytest.raises(Exception, match="not valid"):
            client.infer("digits", [inp], headers=bearer("not-a-key-of-this-server"))
    finally:
        client.close()


def test_plain_http_to_the_tls_port_gets_no_answer(secure: Secure) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", secure.process.port, timeout=10)
    try:
        conn.request("GET", "/v2/health/live")
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            conn.getresponse()
    finally:
        conn.close()


def test_grpc_over_tls_with_keys_and_scopes(secure: Secure) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(
        secure.grpc_address, ssl=True, root_certificates=str(secure.ca)
    )
    try:
        assert client.is_server_live()  # health stays open
        assert client.is_server_ready()
        x = secure.digits.x_test[:8]
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)

        for headers, status, words in (
            (None, "StatusCode.UNAUTHENTICATED", "needs an API key with the 'inference' scope"),
            (metadata("not-a-key-of-this-server"), "StatusCode.UNAUTHENTICATED", "not valid"),
            (metadata(METRICS_KEY), "StatusCode.PERMISSION_DENIED", "lacks the 'inference' scope"),
        ):
            with pytest.raises(InferenceServerException) as info:
                client.infer("digits", [inp], headers=headers)
            assert info.value.status() == status
            assert words in info.value.message()

        result = client.infer("digits", [inp], headers=metadata(INFER_KEY))
        labels = result.as_numpy("label")
        assert labels is not None
        assert labels.ravel().tolist() == secure.digits.estimator.predict(x).tolist()

        # management and metrics calls need their own scopes
        with pytest.raises(InferenceServerException) as info:
            client.load_model("plus1", headers=metadata(INFER_KEY))
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        client.load_model("plus1", headers=metadata(ADMIN_KEY))
        with pytest.raises(InferenceServerException) as info:
            client.get_inference_statistics("digits", headers=metadata(INFER_KEY))
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        stats = client.get_inference_statistics("digits", headers=metadata(METRICS_KEY))
        assert stats.model_stats[0].name == "digits"
    finally:
        client.close()


def test_management_api_is_off_unless_enabled(
    tmp_path: Path, place: Any, onnx_factory: Any, start_server: Any
) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    place(tmp_path, "plus1", {1: onnx_factory.add_const(1.0)})
    grpc_port = free_port()
    served = start_server(tmp_path, args=["--grpc-port", str(grpc_port)])
    for action in ("load", "unload"):
        reply = served.request("POST", f"/v2/repository/models/plus1/{action}")
        assert reply.status == 403
        assert "--enable-management" in reply.json()["error"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        with pytest.raises(InferenceServerException) as info:
            client.unload_model("plus1")
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        assert client.is_model_ready("plus1")  # nothing changed
    finally:
        client.close()
    # the read-only index stays available
    assert served.request("POST", "/v2/repository/index", "{}").status == 200


@pytest.mark.parametrize(
    ("keys_text", "words"),
    [
        ("short inference\n", "line 1': expected a key of at least 16 characters"),
        ("0123456789abcdef0123 inference,admin\n", "scopes among inference, management"),
        ("0123456789abcdef0123\n", "two fields"),
        ("# only a comment\n", "at least one 'KEY SCOPES' line"),
    ],
)
def test_a_bad_key_file_stops_the_server_with_its_line(
    tmp_path: Path, mserve_cli: Any, keys_text: str, words: str
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(keys_text)
    (tmp_path / "repo").mkdir()
    result = mserve_cli(
        "serve", str(tmp_path / "repo"), "--port", str(free_port()), "--api-keys", str(keys)
    )
    assert result.returncode == 3, result.stderr
    assert str(keys) in result.stderr
    assert words in result.stderr
    assert "0123456789abcdef0123" not in result.stderr  # a key is never echoed


def test_tls_files_that_do_not_load_stop_the_server(tmp_path: Path, mserve_cli: Any) -> None:
    (tmp_path / "repo").mkdir()
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    port = str(free_port())
    result = mserve_cli("serve", str(tmp_path / "repo"), "--port", port, "--tls-cert", str(bad))
    assert result.returncode == 3
    assert "--tls-key" in result.stderr
    result = mserve_cli(
        "serve",
        str(tmp_path / "repo"),
        "--port",
        port,
        "--tls-cert",
        str(bad),
        "--tls-key",
        str(bad),
    )
    assert result.returncode == 3
    assert "a PEM certificate chain and its matching private key" in result.stderr


@pytest.mark.parametrize("name", ["..", "%2e%2e", ".hidden", "a%00b", "~root"])
def test_model_names_that_try_path_traversal_are_refused(secure: Secure, name: str) -> None:
    headers = bearer(ADMIN_KEY)
    status, _, text = secure.request("POST", f"/v2/repository/models/{name}/load", "", headers)
    assert status == 400, text
    assert "is not a valid model name; expected letters, digits" in json.loads(text)["error"]


def test_traversal_through_an_encoded_slash_finds_no_route(secure: Secure) -> None:
    path = "/v2/repository/models/..%2F..%2Fetc/load"
    status, _, text = secure.request("POST", path, "", bearer(ADMIN_KEY))
    assert status == 404, text


def test_grpc_load_of_a_traversing_name_is_refused(secure: Secure) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(
        secure.grpc_address, ssl=True, root_certificates=str(secure.ca)
    )
    try:
        with pytest.raises(InferenceServerException) as info:
            client.load_model("../../etc", headers=metadata(ADMIN_KEY))
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "not a valid model name" in info.value.message()
    finally:
        client.close()
