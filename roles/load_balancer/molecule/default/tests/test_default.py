"""Facts about a host converged by the load_balancer role (two stand-in servers on 18000 and 28000, TLS with the
role's own CA, public models sentiment and topic)."""

import base64
import os
import re
import time
from pathlib import Path

import pytest

CONFIG = "/etc/haproxy/haproxy.cfg"
PKI = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "pki"
STATS_URL = "https://127.0.0.1:8404"
CURL_STATS = "curl -s --cacert /etc/haproxy/tls/ca.crt"
STATS = f"{CURL_STATS} -u stats:molecule-stats-password '{STATS_URL}/stats;csv'"


def https_code(host, path: str, method: str = "GET") -> str:
    return host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /etc/haproxy/tls/ca.crt "
                             f"-X {method} https://127.0.0.1:8000{path}")


@pytest.fixture(scope="module")
def max_request_size(host) -> int:
    """The largest request body the load balancer admits, read from its config (its 413 rule)."""
    bound = re.search(r"^\s*http-request return status 413 .* if \{ req\.hdr_val\(content-length\) gt (\d+) \}",
                      host.file(CONFIG).content_string, re.M)
    assert bound, f"{CONFIG} sets no bound on the request size"
    return int(bound.group(1))


@pytest.fixture(scope="module", autouse=True)
def ca_on_the_host(host):
    """The CA the role made on the controller, copied to the host for curl."""
    host.run("mkdir -p /etc/haproxy/tls")
    content = (PKI / "ca.crt").read_text()
    host.run(f"cat > /etc/haproxy/tls/ca.crt <<'EOF'\n{content}EOF")


def test_haproxy_is_installed(host):
    assert host.package("haproxy").is_installed


def test_haproxy_is_running(host):
    assert host.service("haproxy").is_running


def test_haproxy_is_enabled(host):
    assert host.service("haproxy").is_enabled


def test_config_is_valid(host):
    assert host.run(f"haproxy -c -f {CONFIG}").rc == 0


@pytest.mark.parametrize("port", [8000, 8001])
def test_port_is_listening(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_stats_listen_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:8404").is_listening
    assert not host.socket("tcp://0.0.0.0:8404").is_listening


@pytest.mark.parametrize(
    "line",
    [
        "option httpchk GET /v2/health/ready",
        "server server-1 127.0.0.1:18001 proto h2 check port 18000 check-proto h1",
        "server server-2 127.0.0.1:28000 check",
        "option redispatch 1",
        "timeout queue 10s",
        "default-server inter 1s fastinter 250ms rise 2 fall 2 maxconn 32 observe layer4 error-limit 1 "
        "on-error mark-down",
        "http-request return errorfile /etc/haproxy/errors/grpc-overloaded.http if { queue() ge 256 }",
        "use_backend triton_grpc_topic if model_method { var(txn.model) -m str topic }",
        "use_backend triton_http_sentiment if public_model { path,field(4,/) -m str sentiment }",
        "option httpchk GET /v2/models/topic/ready",
        "server server-2 127.0.0.1:28001 proto h2 check port 28000 check-proto h1 disabled",
    ],
)
def test_config_has_line(host, line):
    assert line in [raw.strip() for raw in host.file(CONFIG).content_string.splitlines()]


@pytest.mark.parametrize(("name", "status"), [("grpc-permission-denied", "7"), ("grpc-overloaded", "14")])
def test_the_grpc_answers_of_haproxy_are_http_with_crlf(host, name, status):
    content = host.file(f"/etc/haproxy/errors/{name}.http").content
    assert content.startswith(b"HTTP/1.1 200 OK\r\n") and content.endswith(b"\r\n\r\n")
    assert f"grpc-status: {status}\r\n".encode() in content


def test_the_certificate_chains_to_the_fleet_ca(host):
    assert https_code(host, "/v2/health/ready") == "200"


def test_plain_text_is_not_served(host):
    assert host.run("curl -s -m 5 http://127.0.0.1:8000/v2/health/ready").rc != 0


@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/models/sentiment", "/v2/models/topic/ready"])
def test_public_path_is_proxied(host, path):
    assert https_code(host, path) != "403"


@pytest.mark.parametrize(("method", "path"), [("POST", "/v2/repository/index"), ("GET", "/v2/logging"),
                                              ("GET", "/v2/models/sentiment_tokenizer"), ("GET", "/v2/models/other"),
                                              ("POST", "/v2/systemsharedmemory/region/x/register")])
def test_other_path_is_refused(host, method, path):
    assert https_code(host, path, method) == "403"


@pytest.mark.parametrize(("credentials", "code"), [("", "401"), ("-u stats:wrong-password-0", "401"),
                                                  ("-u stats:molecule-stats-password", "200")])
def test_stats_need_the_password(host, credentials, code):
    assert host.check_output(f"{CURL_STATS} -o /dev/null -w '%{{http_code}}' {credentials} '{STATS_URL}/stats'") == code


def test_stats_speak_tls_only(host):
    assert host.run("curl -s -o /dev/null -u stats:molecule-stats-password http://127.0.0.1:8404/stats").rc != 0


def test_the_configuration_holds_a_hash_of_the_stats_password_not_the_password(host):
    config = host.file(CONFIG).content_string
    assert "molecule-stats-password" not in config and "insecure-password" not in config
    assert re.search(r"^\s*user stats password \$6\$[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}$", config, re.M)


def test_prometheus_metrics_are_served_with_the_password(host):
    out = host.check_output(f"{CURL_STATS} -u stats:molecule-stats-password {STATS_URL}/metrics")
    assert "haproxy_backend_status" in out or "haproxy_process" in out


def server_states(host) -> dict[str, str]:
    """backend/server -> its status in HAProxy's stats (UP, DOWN, MAINT...)."""
    rows = [row.split(",") for row in host.check_output(STATS).splitlines()]
    return {f"{row[0]}/{row[1]}": row[17] for row in rows[1:]
            if len(row) > 17 and row[1] not in ("FRONTEND", "BACKEND")}


def test_each_server_is_in_the_backends_of_the_models_it_serves_and_in_maintenance_in_the_others(host):
    """server-2 serves no topic: in maintenance in topic's backends, up in every other one."""
    up = {f"triton_{protocol}{backend}/server-{n}": "UP" for protocol in ("http", "grpc")
          for backend in ("", "_sentiment", "_topic") for n in (1, 2)}
    up.update({"triton_http_topic/server-2": "MAINT", "triton_grpc_topic/server-2": "MAINT"})
    assert server_states(host) == up


@pytest.mark.parametrize("model", ["topic", "sentiment"])
def test_a_models_requests_reach_only_the_servers_that_serve_it(host, model):
    """Ten requests in a row, balanced over the backend's servers: every one answered by a server that has the model
    (server-2 answers topic's readiness with 404)."""
    assert [https_code(host, f"/v2/models/{model}/ready") for _ in range(10)] == ["200"] * 10


def test_a_server_without_the_model_goes_down_in_its_backend_once_enabled(host):
    """Put in by hand, server-2's health check on topic's readiness fails: DOWN there within 3 s, and topic's
    requests still reach server-1 alone (the check is the guard behind the maintenance state); back in maintenance
    afterwards."""
    host.check_output(admin("enable server triton_http_topic/server-2"))
    try:
        time.sleep(3)
        assert server_states(host)["triton_http_topic/server-2"] == "DOWN"
        assert [https_code(host, "/v2/models/topic/ready") for _ in range(10)] == ["200"] * 10
    finally:
        host.check_output(admin("disable server triton_http_topic/server-2"))


def admin(command: str) -> str:
    """A shell command that gives HAProxy's runtime API (its local admin socket) one command."""
    script = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
              "s.sendall(sys.argv[1].encode() + b'\\n'); print(s.recv(4096).decode())")
    return f"python3 -c \"{script}\" '{command}'"


# --- the gRPC message parser: HAProxy answers a refused call itself (grpc-status 7, 8), others go to a server ---

def field(number: int, wire: int, payload: bytes, tag_padding: int = 0) -> bytes:
    """One protobuf field: its tag (padded with `tag_padding` zero bytes, a longer encoding) and its payload."""
    tag = bytes([number << 3 | wire])
    if tag_padding:
        tag = bytes([tag[0] | 0x80]) + b"\x80" * (tag_padding - 1) + b"\x00"
    return tag + (bytes([len(payload)]) + payload if wire == 2 else payload)


def frame(message: bytes, compressed: int = 0, declared: int | None = None) -> bytes:
    """A gRPC message: compressed flag, 4-byte big-endian length, the message."""
    return bytes([compressed]) + (len(message) if declared is None else declared).to_bytes(4, "big") + message


def name(model: str, **kwargs) -> bytes:
    return field(1, 2, model.encode(), **kwargs)


TENSOR = field(5, 2, name("TEXT") + field(2, 2, b"BYTES"))  # an input tensor (field 5), its own field 1 inside


def grpc_status(host, message: bytes, method: str = "ModelMetadata") -> str:
    """The grpc-status HAProxy answers with (from its errorfiles), or "" when it passed the call to a server."""
    host.run(f"echo {base64.b64encode(message).decode()} | base64 -d > /tmp/grpc-message")
    headers = host.check_output(
        "curl -s -m 10 --http2 --cacert /etc/haproxy/tls/ca.crt -H 'content-type: application/grpc' -H 'te: trailers' "
        f"--data-binary @/tmp/grpc-message -o /dev/null -D - https://127.0.0.1:8001/inference.GRPCInferenceService/{method}")
    return next((line.split(":", 1)[1].strip() for line in headers.splitlines() if line.startswith("grpc-status:")), "")


@pytest.mark.parametrize(("shape", "message"), [
    ("a public model", frame(name("sentiment"))),
    ("the other public model", frame(name("topic"))),
    ("its name after the tensors", frame(TENSOR + field(7, 2, b"data") + name("sentiment"))),
    ("a longer encoding of the tag", frame(name("sentiment", tag_padding=2))),
])
def test_a_call_naming_a_public_model_once_passes(host, shape, message):
    assert grpc_status(host, message, "ModelInfer") == "", shape


@pytest.mark.parametrize(("shape", "message"), [
    ("an internal step", frame(name("sentiment_classifier"))),
    ("another model", frame(name("other"))),
    ("no name", frame(TENSOR)),
    ("an internal step after a public model", frame(name("sentiment") + name("sentiment_classifier"))),
    ("an internal step before a public model", frame(name("sentiment_classifier") + name("sentiment"))),
    ("a public model twice", frame(name("sentiment") + name("sentiment"))),
    ("an internal step in a longer tag", frame(name("sentiment") + name("sentiment_tokenizer", tag_padding=3))),
    ("field 1 as a varint, then a name", frame(field(1, 0, b"\x07") + name("sentiment"))),
    ("field 1 as 4 bytes, then a name", frame(name("sentiment") + field(1, 5, b"abcd"))),
    ("a group", frame(name("sentiment") + field(2, 3, b""))),
    ("a length past the end", frame(name("sentiment") + bytes([5 << 3 | 2, 100]) + b"x")),
    ("a fixed field cut short", frame(name("sentiment") + field(3, 1, b"abc"))),
    ("a compressed message", frame(name("sentiment"), compressed=1)),
    ("a message longer than it says", frame(name("sentiment"), declared=3)),
    ("a message shorter than it says", frame(name("sentiment"), declared=40)),
    ("two messages", frame(name("sentiment")) + frame(name("sentiment_classifier"))),
    ("a header only", b"\x00\x00\x00"),
])
@pytest.mark.parametrize("method", ["ModelReady", "ModelMetadata", "ModelInfer"])
def test_a_call_that_does_not_name_one_public_model_for_certain_is_refused(host, shape, message, method):
    assert grpc_status(host, message, method) == "7", shape


def test_a_grpc_message_over_the_size_bound_is_refused_with_resource_exhausted(host, max_request_size):
    assert grpc_status(host, frame(name("sentiment"), declared=max_request_size + 1), "ModelInfer") == "8"


def test_an_http_body_over_the_size_bound_is_refused(host, max_request_size):
    host.check_output(f"head -c {max_request_size + 1} /dev/zero > /tmp/big-body")
    code = host.check_output("curl -s -o /dev/null -w '%{http_code}' "
                             "--cacert /etc/haproxy/tls/ca.crt -H 'content-type: application/json' "
                             "--data-binary @/tmp/big-body https://127.0.0.1:8000/v2/models/sentiment/infer")
    assert code == "413"


def test_an_http_body_without_its_length_is_refused(host):
    code = host.check_output("echo '{}' | curl -s -o /dev/null -w '%{http_code}' --cacert /etc/haproxy/tls/ca.crt "
                             "-H 'transfer-encoding: chunked' --data-binary @- "
                             "https://127.0.0.1:8000/v2/models/sentiment/infer")
    assert code == "411"


def tls_handshake(host, *options: str) -> str:
    """The cipher a TLS handshake with the HTTPS frontend settles on, or "(NONE)" when it is refused."""
    out = host.run(f"openssl s_client -connect 127.0.0.1:8000 {' '.join(options)} </dev/null 2>&1").stdout
    found = re.search(r"Cipher is (\S+)", out)
    return found.group(1) if found else "(NONE)"


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256"])
def test_a_tls12_cipher_without_forward_secrecy_or_aead_is_refused(host, cipher):
    assert tls_handshake(host, "-tls1_2", "-cipher", cipher) == "(NONE)"


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_before_12_is_refused(host, version):
    assert tls_handshake(host, version, "-cipher", "ALL:@SECLEVEL=0") == "(NONE)"


@pytest.mark.parametrize(("options", "cipher"), [
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "ECDHE-ECDSA-AES128-GCM-SHA256"),
    (("-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"), "TLS_AES_256_GCM_SHA384"),
    (("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"), "TLS_CHACHA20_POLY1305_SHA256"),
])
def test_a_forward_secret_aead_cipher_is_taken(host, options, cipher):
    assert tls_handshake(host, *options) == cipher


def test_a_tls13_suite_outside_the_list_is_refused(host):
    assert tls_handshake(host, "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256") == "(NONE)"
