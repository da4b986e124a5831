"""The project's gRPC client retries UNAVAILABLE (a server that died under a call), within its budget, and never a
call the load balancer shed (grpc-retry-pushback-ms: -1). Against a real gRPC server in this process that speaks
Triton's service and fails the first calls as the fleet would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonfleet.client import ClientError, TextClient

pytestmark = pytest.mark.unit


class FlakyServer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """ServerReady fails the first `failures` calls with UNAVAILABLE, then answers ready. `shed` adds the load
    balancer's pushback to each failure."""

    def __init__(self, failures: int, shed: bool = False) -> None:
        self.failures, self.shed, self.calls = failures, shed, 0
        self.lock = threading.Lock()

    def ServerReady(self, request, context):  # noqa: N802 - the service's method name
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.failures
        if failing:
            if self.shed:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", "-1"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "the fleet is at capacity: retry later" if self.shed
                          else "the server went away")
        return service_pb2.ServerReadyResponse(ready=True)


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(servicer: FlakyServer) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def test_an_unavailable_call_is_retried_and_succeeds(serve):
    servicer = FlakyServer(failures=2)
    assert TextClient(serve(servicer), timeout=10).ready() is True
    assert servicer.calls == 3


def test_retries_stop_after_three_attempts(serve):
    servicer = FlakyServer(failures=5)
    with pytest.raises(ClientError, match="UNAVAILABLE"):
        TextClient(serve(servicer), timeout=10).ready()
    assert servicer.calls == 3


def test_a_shed_call_is_not_retried(serve):
    servicer = FlakyServer(failures=1, shed=True)
    with pytest.raises(ClientError, match="at capacity"):
        TextClient(serve(servicer), timeout=10).ready()
    assert servicer.calls == 1


def test_the_retry_budget_stops_retries_when_everything_fails(serve):
    """Every call fails: the first few are retried, then the budget (retryThrottling) is spent and calls fail after
    one attempt each, instead of tripling the load on a fleet that refuses everything."""
    servicer = FlakyServer(failures=10**6)
    client = TextClient(serve(servicer), timeout=10)
    for _ in range(20):
        with pytest.raises(ClientError):
            client.ready()
    assert servicer.calls < 20 * 2, servicer.calls
