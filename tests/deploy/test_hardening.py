"""The hardened fleet, against the deployed local fleet: admin APIs behind a key and refused at the load balancer,
TLS, no request lost when the load balancer reloads, a broken release rolled back, load shed past capacity,
fuzzing. (No request lost when a server host dies: test_monitoring.py, whose alert test kills the same host once
for both facts.)

The load tests run at reduced scale: USERS closed-loop users through the load balancer, a load one server can
carry alone while the other is out (it admits load_balancer_server_maxconn requests at once; beyond that the
load balancer queues and sheds, which the overload test proves on its own). Each test leaves the fleet converged
(the inventory's release, every host serving).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from fleetlib import (
    BALANCER,
    CA_FILE,
    ROOT,
    SERVERS,
    USERS,
    Load,
    admin_key,
    ansible_playbook,
    balancer_config,
    balancer_limits,
    connect_from,
    container_memory_mb,
    fleet_docker,
    grpc_status,
    host_address,
    host_var,
    lb_channel,
    load_texts,
    max_request_size,
    outsider_on,
    smoke_test,
)
from fuzzing import CLIENT_ERROR_STATUSES, http_requests, malformed, smuggled
from hypothesis import HealthCheck, given, settings
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonfleet import layout
from tritonfleet.bench.chaos import broken_release
from tritonfleet.release import deployed

RECORD = ROOT / "build" / "deployed" / "local.json"
ADMIN_HEADER = "tritonfleet-admin-key"


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_texts(tmp_path_factory.mktemp("load"))


def ready(host: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://{host_address(host)}:8000/v2/health/ready", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def https(path: str, method: str = "GET", body: bytes | None = None, port: int = 8000) -> int:
    """Status of a request to the load balancer over TLS (trusting the fleet's CA)."""
    context = ssl.create_default_context(cafile=str(CA_FILE))
    conn = http.client.HTTPSConnection(host_address(BALANCER), port, context=context, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def plain(host: str, path: str, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None, port: int = 8000) -> int:
    conn = http.client.HTTPConnection(host_address(host), port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# --- the Triton ports: the load balancers, the monitoring hosts and the controller only ---------------------------

#: Triton's published ports on a server: HTTP, gRPC, metrics.
TRITON_PORTS = [8000, 8001, 8002]


@pytest.fixture(scope="module")
def outsider():
    with outsider_on(host_var(BALANCER, "tritonfleet_fleet_network")) as name:
        yield name


@pytest.mark.parametrize("port", TRITON_PORTS)
@pytest.mark.parametrize("server", SERVERS)
def test_a_triton_port_refuses_a_host_outside_the_admitted_set(outsider, server, port):
    assert connect_from(outsider, host_address(server), port) == "refused"


@pytest.mark.parametrize("port", TRITON_PORTS)
@pytest.mark.parametrize("server", SERVERS)
def test_a_triton_port_admits_the_load_balancer_and_monitoring_host(server, port):
    assert connect_from(BALANCER, host_address(server), port) == "open"


@pytest.mark.parametrize("port", TRITON_PORTS[:2])
@pytest.mark.parametrize("server", SERVERS)
def test_the_triton_container_routed_to_through_its_server_refuses_a_host_outside_the_admitted_set(outsider, server,
                                                                                                  port):
    """Another path to the same server: the container's own address on the server's Docker bridge, routed through
    the server, with no published port (and so no NAT) on the way."""
    bridge = json.loads(fleet_docker(server, "network", "inspect", "bridge"))[0]["IPAM"]["Config"][0]["Subnet"]
    container = json.loads(fleet_docker(server, "inspect", "tritonserver"))[0]["NetworkSettings"]["IPAddress"]
    subprocess.run(["docker", "exec", outsider, "ip", "route", "replace", bridge, "via", host_address(server)],
                   check=True, capture_output=True)
    assert connect_from(outsider, container, port) in ("refused", "TimeoutError")


def test_the_firewall_of_a_server_is_the_first_rule_of_docker_user():
    rules = subprocess.run(["docker", "exec", SERVERS[0], "iptables", "-S", "DOCKER-USER"], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    assert rules[1] == "-A DOCKER-USER -j TRITONFLEET-TRITON", rules


# --- admin APIs ------------------------------------------------------------------------------------------------

ADMIN_HTTP = [
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/sentiment/unload"),
    ("GET", "/v2/logging"),
    ("POST", "/v2/logging"),
    ("GET", "/v2/trace/setting"),
    ("POST", "/v2/trace/setting"),
    ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/systemsharedmemory/region/x/register"),
    ("GET", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/models/stats"),
]
ADMIN_GRPC = [
    ("RepositoryIndex", service_pb2.RepositoryIndexRequest()),
    ("RepositoryModelUnload", service_pb2.RepositoryModelUnloadRequest(model_name="sentiment")),
    ("LogSettings", service_pb2.LogSettingsRequest()),
    ("TraceSetting", service_pb2.TraceSettingRequest()),
    ("SystemSharedMemoryStatus", service_pb2.SystemSharedMemoryStatusRequest()),
    ("SystemSharedMemoryRegister", service_pb2.SystemSharedMemoryRegisterRequest(name="x", key="/x", byte_size=8)),
    ("CudaSharedMemoryStatus", service_pb2.CudaSharedMemoryStatusRequest()),
    ("ModelStatistics", service_pb2.ModelStatisticsRequest()),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_HTTP + [("GET", "/v2/models/sentiment_tokenizer"),
                                                          ("POST", "/v2/models/sentiment_classifier/infer"),
                                                          ("GET", "/v2/models/sentiment/config")])
def test_admin_and_internal_http_calls_are_refused_at_the_load_balancer(method, path):
    assert https(path, method, b"{}" if method == "POST" else None) == 403


@pytest.mark.parametrize(("method", "request_message"), ADMIN_GRPC)
def test_admin_grpc_calls_are_refused_at_the_load_balancer(method, request_message):
    assert grpc_status(lb_channel(), method, request_message) == "StatusCode.PERMISSION_DENIED"


# --- the model a gRPC call names ----------------------------------------------------------------------------------

SERVICE = "/inference.GRPCInferenceService"


def public_models() -> list[str]:
    return deployed(RECORD).names()


def internal_models() -> list[str]:
    return [step for name in public_models() for step in layout.model_names(name).steps()]


def raw_call(channel: grpc.Channel, method: str, message: bytes) -> tuple[str, bytes]:
    """(status, answer's bytes) of a gRPC call whose message is sent as these bytes, unparsed."""
    call = channel.unary_unary(f"{SERVICE}/{method}", request_serializer=None, response_deserializer=None)
    try:
        return "StatusCode.OK", call(message, timeout=10)
    except grpc.RpcError as exc:
        return str(exc.code()), b""


def classifier_request(model: str) -> service_pb2.ModelInferRequest:
    """A valid inference request for an internal classifier step (token ids and mask), from its metadata."""
    channel = grpc.insecure_channel(f"{host_address(SERVERS[0])}:8001")
    meta = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
        service_pb2.ModelMetadataRequest(name=model), timeout=10)
    request = service_pb2.ModelInferRequest(model_name=model)
    for tensor in meta.inputs:
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=[1, 8])
        width = 8 if tensor.datatype == "INT64" else 4
        request.raw_input_contents.append((b"\x01" + bytes(width - 1)) * 8)
    return request


def smuggle_pairs() -> list[tuple[str, bytes]]:
    """The issue's shape: a public model's request, then an internal step's, in one message (protobuf keeps the
    last model name)."""
    public, internal = public_models()[0], layout.model_names(public_models()[0]).classifier
    return [
        ("ModelReady", service_pb2.ModelReadyRequest(name=public).SerializeToString()
         + service_pb2.ModelReadyRequest(name=internal).SerializeToString()),
        ("ModelMetadata", service_pb2.ModelMetadataRequest(name=public).SerializeToString()
         + service_pb2.ModelMetadataRequest(name=internal).SerializeToString()),
        ("ModelInfer", service_pb2.ModelInferRequest(model_name=public).SerializeToString()
         + classifier_request(internal).SerializeToString()),
    ]


@pytest.mark.parametrize("method", ["ModelReady", "ModelMetadata", "ModelInfer"])
def test_an_internal_model_smuggled_after_a_public_one_runs_on_a_server(method):
    """The server itself reads the last name: the shape is a real bypass, which only the load balancer stops."""
    message = dict(smuggle_pairs())[method]
    status, answer = raw_call(grpc.insecure_channel(f"{host_address(SERVERS[0])}:8001"), method, message)
    assert status == "StatusCode.OK", status
    if method == "ModelMetadata":
        assert service_pb2.ModelMetadataResponse.FromString(answer).name.endswith("_classifier")


@pytest.mark.parametrize("method", ["ModelReady", "ModelMetadata", "ModelInfer"])
def test_an_internal_model_smuggled_after_a_public_one_is_refused_at_the_load_balancer(method):
    assert raw_call(lb_channel(), method, dict(smuggle_pairs())[method])[0] == "StatusCode.PERMISSION_DENIED"


@pytest.mark.parametrize("method", ["ModelReady", "ModelMetadata", "ModelInfer"])
def test_an_internal_model_named_alone_is_refused_at_the_load_balancer(method):
    internal = layout.model_names(public_models()[0]).classifier
    message = {"ModelReady": service_pb2.ModelReadyRequest(name=internal),
               "ModelMetadata": service_pb2.ModelMetadataRequest(name=internal),
               "ModelInfer": classifier_request(internal)}[method].SerializeToString()
    assert raw_call(lb_channel(), method, message)[0] == "StatusCode.PERMISSION_DENIED"


def test_a_public_inference_with_its_model_name_last_passes_the_load_balancer():
    """The load balancer parses the message: the name is found after the tensors too (a regex would miss it)."""
    request = service_pb2.ModelInferRequest()
    request.inputs.add(name=layout.TEXT, datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(len(b"a fine day").to_bytes(4, "little") + b"a fine day")
    message = request.SerializeToString() + service_pb2.ModelInferRequest(
        model_name=public_models()[0]).SerializeToString()
    status, answer = raw_call(lb_channel(), "ModelInfer", message)
    assert status == "StatusCode.OK"
    assert service_pb2.ModelInferResponse.FromString(answer).model_name == public_models()[0]


SMUGGLE_EXAMPLES = 300


@pytest.mark.parametrize("method", ["ModelReady", "ModelMetadata", "ModelInfer"])
def test_fuzzed_smuggled_model_names_are_all_refused_at_the_load_balancer(method):
    """Field 1 repeated, reordered, in longer encodings and other wire types, around a real request's fields."""
    rest = b""
    if method == "ModelInfer":
        request = classifier_request(internal_models()[1])
        request.ClearField("model_name")
        rest = request.SerializeToString()
    channel, statuses = lb_channel(), {}

    @settings(max_examples=SMUGGLE_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(smuggled(public_models(), internal_models(), rest))
    def send(message):
        status = raw_call(channel, method, message)[0]
        statuses[status] = statuses.get(status, 0) + 1
        assert status == "StatusCode.PERMISSION_DENIED", message.hex()

    send()
    print(f"smuggled {method}: {statuses}")
    assert sum(statuses.values()) == SMUGGLE_EXAMPLES


# --- the size bound -------------------------------------------------------------------------------------------


def test_a_grpc_message_over_the_size_bound_is_refused_at_the_load_balancer():
    request = service_pb2.ModelInferRequest(model_name=public_models()[0])
    request.inputs.add(name=layout.TEXT, datatype="BYTES", shape=[1, 1])
    size = max_request_size()
    request.raw_input_contents.append(size.to_bytes(4, "little") + b"x" * size)
    assert raw_call(lb_channel(), "ModelInfer", request.SerializeToString())[0] == "StatusCode.RESOURCE_EXHAUSTED"


def test_an_http_body_over_the_size_bound_is_refused_at_the_load_balancer():
    """Refused on its headers: the load balancer answers and closes before the body is sent."""
    context = ssl.create_default_context(cafile=str(CA_FILE))
    conn = http.client.HTTPSConnection(host_address(BALANCER), 8000, context=context, timeout=10)
    try:
        conn.putrequest("POST", f"/v2/models/{public_models()[0]}/infer")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(max_request_size() + 1))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_an_http_body_without_its_length_is_refused_at_the_load_balancer():
    """A chunked body. The request goes out in one write: the load balancer answers 411 on the headers and closes,
    and a client still sending its chunks then would see the close, not the answer (http.client did, now and then)."""
    context = ssl.create_default_context(cafile=str(CA_FILE))
    address = host_address(BALANCER)
    request = (f"POST /v2/models/{public_models()[0]}/infer HTTP/1.1\r\nHost: {address}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    with socket.create_connection((address, 8000), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=address) as tls:
        tls.sendall(request.encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        assert response.status == 411


def test_the_public_calls_pass_the_load_balancer():
    assert [https("/v2/health/ready"), https("/v2/models/sentiment"), https("/v2/models/topic/ready")] == [200] * 3
    assert grpc_status(lb_channel(), "ServerReady", service_pb2.ServerReadyRequest()) == "StatusCode.OK"


def test_the_load_balancer_speaks_tls_only():
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain(BALANCER, "/v2/health/ready")


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/logging"), ("POST", "/v2/repository/index"),
                                              ("GET", "/v2/models/stats")])
def test_an_admin_http_call_on_a_server_needs_the_key(method, path):
    without = plain(SERVERS[0], path, method, body=b"{}" if method == "POST" else None)
    with_key = plain(SERVERS[0], path, method, {ADMIN_HEADER: admin_key()}, b"{}" if method == "POST" else None)
    assert (without, with_key) == (403, 200)


# --- the admin key is on no command line -----------------------------------------------------------------------


@pytest.mark.parametrize("user", ["root", "deploy"])
@pytest.mark.parametrize("server", SERVERS)
def test_no_process_listing_on_a_server_shows_the_admin_key(server, user):
    """`ps` as root and as the login user, every process's whole command line: tritonserver's shows the key
    file's reference (its loader puts the key in place in the process), never the key."""
    listing = subprocess.run(["docker", "exec", "-u", user, server, "ps", "-eww", "-o", "args"], check=True,
                             capture_output=True, text=True).stdout
    assert "--http-restricted-api=" in listing and "${file:/run/secrets/" in listing, listing
    assert admin_key() not in listing


@pytest.mark.parametrize("server", SERVERS)
def test_docker_inspect_of_the_triton_container_does_not_show_the_admin_key(server):
    inspected = fleet_docker(server, "inspect", "tritonserver")
    assert "${file:/run/secrets/" in inspected and admin_key() not in inspected


@pytest.mark.parametrize("server", SERVERS)
def test_the_admin_key_file_is_readable_by_the_server_user_only(server):
    mode = subprocess.run(["docker", "exec", server, "stat", "-c", "%a %u", "/etc/tritonfleet/triton-admin-key"],
                          check=True, capture_output=True, text=True).stdout.split()
    assert mode == ["400", "1000"]


def test_the_reference_to_the_admin_key_file_is_not_the_key():
    reference = "${file:/run/secrets/tritonfleet-admin-key}"
    assert plain(SERVERS[0], "/v2/repository/index", "POST", {ADMIN_HEADER: reference}, b"{}") == 403


@pytest.mark.parametrize(("method", "request_message"), [ADMIN_GRPC[0], ADMIN_GRPC[2], ADMIN_GRPC[7]])
def test_an_admin_grpc_call_on_a_server_needs_the_key(method, request_message):
    channel = grpc.insecure_channel(f"{host_address(SERVERS[0])}:8001")
    without = grpc_status(channel, method, request_message)
    # Triton reads a restricted gRPC protocol's key from the metadata "triton-grpc-protocol-<header>".
    with_key = grpc_status(channel, method, request_message, ((f"triton-grpc-protocol-{ADMIN_HEADER}", admin_key()),))
    assert without != "StatusCode.OK" and with_key == "StatusCode.OK", (without, with_key)


def stats_page(password: str | None) -> int:
    """The status of the load balancer's stats page, over TLS (the fleet's CA), with or without a password."""
    url = f"https://{host_address(BALANCER)}:8404/stats"
    handlers: list = [urllib.request.ProxyHandler({}),
                      urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(CA_FILE)))]
    if password is not None:
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, url, "stats", password)
        handlers.append(urllib.request.HTTPBasicAuthHandler(manager))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(("password", "status"), [(None, 401), ("wrong-password-0123", 401), ("the right one", 200)])
def test_the_stats_page_needs_its_password(password, status):
    right = (ROOT / "build" / "secrets" / "haproxy-stats-password").read_text().split()[0]
    assert stats_page(right if password == "the right one" else password) == status


def test_the_stats_page_speaks_tls_only():
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain(BALANCER, "/stats", port=8404)


def test_the_balancer_config_holds_no_stats_password():
    right = (ROOT / "build" / "secrets" / "haproxy-stats-password").read_text().split()[0]
    config = balancer_config()
    assert right not in config and "insecure-password" not in config


# --- fuzzing ---------------------------------------------------------------------------------------------------

#: Malformed requests per protocol (10,000 in all), through the load balancer (TLS): the way clients come in.
FUZZ_EXAMPLES = 5000
FUZZ_SETTINGS = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_report() -> dict:
    return {"memory_mb_before": {host: container_memory_mb(host) for host in SERVERS}, "http": {}, "grpc": {}}


def test_malformed_http_requests_get_client_errors(fuzz_report):
    context = ssl.create_default_context(cafile=str(CA_FILE))
    conn = http.client.HTTPSConnection(host_address(BALANCER), 8000, context=context, timeout=30)
    statuses = fuzz_report["http"]

    @FUZZ_SETTINGS
    @given(http_requests(max_batch_size=8))
    def send(request):
        model, headers, body, defect = request
        try:
            conn.request("POST", f"/v2/models/{urllib.parse.quote(model, safe='')}/infer", body=body,
                         headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            status = f"{type(exc).__name__}"
        statuses[status] = statuses.get(status, 0) + 1
        assert isinstance(status, int) and 400 <= status < 500, f"{defect}: {status} for {body[:200]!r}"

    send()
    assert sum(statuses.values()) >= FUZZ_EXAMPLES and all(ready(host) for host in SERVERS)


def test_malformed_grpc_requests_get_client_errors(fuzz_report):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(lb_channel())
    statuses = fuzz_report["grpc"]

    @FUZZ_SETTINGS
    @given(malformed(max_batch_size=8))
    def send(request):
        message = service_pb2.ModelInferRequest(model_name=request.model)
        for tensor in request.tensors:
            message.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            message.raw_input_contents.append(tensor.serialized())
        try:
            stub.ModelInfer(message, timeout=30)
            status = "StatusCode.OK"
        except grpc.RpcError as exc:
            status = str(exc.code())
        statuses[status] = statuses.get(status, 0) + 1
        assert status in CLIENT_ERROR_STATUSES, f"{request.defect}: {status}"

    send()
    assert sum(statuses.values()) >= FUZZ_EXAMPLES and all(ready(host) for host in SERVERS)


def test_the_fuzzed_servers_stay_ready_with_bounded_memory(fuzz_report):
    after = {host: container_memory_mb(host) for host in SERVERS}
    growth = {host: round(after[host] - fuzz_report["memory_mb_before"][host]) for host in SERVERS}
    print(f"fuzz: {sum(fuzz_report['http'].values())} HTTP {fuzz_report['http']}, "
          f"{sum(fuzz_report['grpc'].values())} gRPC {fuzz_report['grpc']}; memory growth (MiB) {growth}")
    assert all(ready(host) for host in SERVERS)
    assert max(growth.values()) < 200, growth


# --- the load balancer reloads --------------------------------------------------------------------------------


def test_a_load_balancer_reload_under_load_loses_no_request(texts):
    """HAProxy reloads its configuration (what the role's handler does after a change) in the middle of the load:
    the old process finishes what it holds and tells the clients (HTTP/2 GOAWAY) to use the new one."""
    maxconn, _, _ = balancer_limits()
    load = Load(3 * maxconn, 30, texts)
    time.sleep(12)
    subprocess.run(["docker", "exec", BALANCER, "systemctl", "reload", "haproxy"], check=True, capture_output=True)
    result = load.result()
    assert result["sent_total"] > 100, result
    assert (result["errors_total"], result["error_statuses"]) == (0, {}), result["error_samples"]


# --- a broken release -----------------------------------------------------------------------------------------


def test_a_broken_release_is_rolled_back_and_stops_the_rollout(texts, tmp_path):
    good = deployed(RECORD)
    broken = broken_release(good, tmp_path)
    before = {host: json.loads(fleet_docker(host, "inspect", "tritonserver"))[0] for host in SERVERS}
    load = Load(USERS, 1800, texts)
    run = ansible_playbook("deploy.yml", "-e", json.dumps({"model_conversion_release": broken.as_json()}),
                           log_name="broken-release")
    result = load.stop()
    first, rest = SERVERS[0], SERVERS[1:]
    assert run.returncode != 0
    assert f"ROLLOUT STOPPED at {first}: release {broken.id[:12]} failed" in run.output
    assert f"rolled back to release {good.id[:12]}, which passes its smoke test" in run.output
    # The first host serves the good release again, and says so; the hosts after it were not touched.
    assert deployed(RECORD, first).id == good.id
    assert smoke_test(first, good.path).returncode == 0
    for host in rest:
        after = json.loads(fleet_docker(host, "inspect", "tritonserver"))[0]
        assert (after["Id"], after["State"]["StartedAt"]) == (before[host]["Id"], before[host]["State"]["StartedAt"])
        assert deployed(RECORD, host).id == good.id
    # Nobody using the load balancer noticed.
    assert result["sent_total"] > 100
    assert (result["errors_total"], result["error_statuses"]) == (0, {}), result["error_samples"]


# --- overload ---------------------------------------------------------------------------------------------------


def test_overload_is_shed_with_explicit_fast_errors_and_latency_recovers(texts):
    """Far more users than the load balancer lets through or queues, for 30 s: the excess is refused at once with
    UNAVAILABLE "the fleet is at capacity", nothing waits longer than the queue allows, the servers stay up with
    bounded memory, and once the load drops p99 is what it was.

    The users are sized from the deployed bounds: the servers take maxconn each in flight and the queue holds
    max_queue, so twice that many users must find the queue full, however fast the machine is."""
    maxconn, max_queue, queue_s = balancer_limits()
    capacity = maxconn * len(SERVERS)
    assert maxconn > USERS
    memory_before = {host: container_memory_mb(host) for host in SERVERS}
    baseline = Load(USERS, 15, texts).result()
    users = 2 * (capacity + max_queue)
    overload = Load(users, 30, texts, timeout=60).result()
    recovered = Load(USERS, 15, texts).result()
    memory_after = {host: container_memory_mb(host) for host in SERVERS}
    print(f"overload: {maxconn} per server, queue of {max_queue}, queue timeout {queue_s} s; baseline "
          f"{baseline['throughput']}/s, p99 {baseline['p99_ms']} ms; at {users} users {overload['throughput']}/s, "
          f"{overload['errors_total']} refused {overload['error_statuses']}, max {overload['max_ms']} ms; after p99 "
          f"{recovered['p99_ms']} ms; memory {memory_before} -> {memory_after}")
    assert all(ready(host) for host in SERVERS)
    assert all(memory_after[h] - memory_before[h] < 300 for h in SERVERS), (memory_before, memory_after)
    assert overload["errors_total"] > 0, f"{users} users were not shed at all"
    assert set(overload["error_statuses"]) <= {"StatusCode.UNAVAILABLE"}, overload["error_samples"]
    # Refused by the bound (the load balancer's own answer), not after waiting out the queue timeout.
    assert all("the fleet is at capacity" in sample for sample in overload["error_samples"]), overload["error_samples"]
    assert overload["max_ms"] < queue_s * 1000 + 5000, "a request waited past the queue timeout"
    assert (baseline["errors_total"], recovered["errors_total"]) == (0, 0)
    assert recovered["p99_ms"] <= 2 * baseline["p99_ms"] + 250
