"""A small text client for the served ensemble, over gRPC (default) or HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import layout
from .errors import TritonfleetError, UsageError

PROTOCOLS = ("grpc", "http")
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}

#: The gRPC service config of this project's clients (docs/DEPLOY.md shows it for users' own clients): a call that
#: fails with UNAVAILABLE (a server that died under it, a stream the load balancer refused) is sent again, at most
#: 3 attempts with backoff; inference, health and metadata are idempotent. `retryThrottling` is the retry budget:
#: each failure costs a token, each success gives back 0.1, and no retry is sent below half of the 10 tokens, so a
#: fleet that refuses everything is not retried into a storm. A request the load balancer sheds carries
#: `grpc-retry-pushback-ms: -1` and is never retried.
GRPC_SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [{
        "name": [{"service": "inference.GRPCInferenceService"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


def grpc_channel_args(service_config: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    """tritonclient's own channel arguments (unbounded message sizes) plus retries by `service_config`
    (default GRPC_SERVICE_CONFIG)."""
    import json

    unbounded = 2**31 - 1
    return [("grpc.max_send_message_length", unbounded), ("grpc.max_receive_message_length", unbounded),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(service_config or GRPC_SERVICE_CONFIG))]


class ClientError(TritonfleetError):
    """The server could not be reached, timed out, or refused a request. `str()` is one line."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Prediction:
    text: str
    label: str
    scores: list[float]


def _module(protocol: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as mod
    elif protocol == "http":
        import tritonclient.http as mod
    else:
        raise UsageError(f"protocol {protocol!r}: choose one of {PROTOCOLS}")
    return mod


def normalize_url(url: str, protocol: str) -> str:
    """Accept host, host:port or http://host:port; return host:port."""
    url = url.split("://", 1)[-1].rstrip("/")
    if ":" not in url.rsplit("]", 1)[-1]:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


def _status(exc: Exception) -> str | None:
    status = getattr(exc, "status", None)
    value = status() if callable(status) else status
    return str(value) if value is not None else None


def _one_line(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return " ".join(str(text).split())


class TextClient:
    """Wraps tritonclient's gRPC and HTTP clients behind one interface and one-line errors."""

    def __init__(self, url: str, protocol: str = "grpc", timeout: float = 30.0, model: str | None = None,
                 ca_file: Path | None = None, headers: dict[str, str] | None = None) -> None:
        """`ca_file`: speak TLS, trusting that CA (a load balancer's certificate); `headers`: sent with every call
        (e.g. the admin key a server wants for its restricted APIs)."""
        self.protocol = protocol
        self.url = normalize_url(url, protocol)
        self.timeout = timeout
        self.model = model or layout.MODELS.ensemble
        self.headers = dict(headers or {})
        self._mod = _module(protocol)
        try:
            if protocol == "grpc":
                if ca_file is not None:
                    Path(ca_file).read_bytes()  # one clear error for a missing file, before the client's own
                self._client = self._mod.InferenceServerClient(self.url, ssl=ca_file is not None,
                                                               root_certificates=str(ca_file) if ca_file else None,
                                                               channel_args=grpc_channel_args())
            else:
                self._client = self._mod.InferenceServerClient(
                    self.url, connection_timeout=timeout, network_timeout=timeout, ssl=ca_file is not None,
                    ssl_options={"ca_certs": str(ca_file)} if ca_file else None)
        except OSError as exc:
            raise ClientError(f"cannot read the CA file {ca_file}: {exc.strerror}") from None
        except Exception as exc:  # noqa: BLE001 - tritonclient raises several types; report one line
            raise ClientError(f"cannot create a {protocol} client for {self.url}: {_one_line(exc)}") from None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.protocol == "grpc":
            kwargs.setdefault("client_timeout", self.timeout)
        if self.headers:
            kwargs.setdefault("headers", self.headers)
        try:
            return fn(*args, **kwargs)
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise ClientError(f"{what}: cannot reach Triton at {self.url} over {self.protocol}: "
                              f"{_one_line(exc)}", "UNAVAILABLE") from None
        except Exception as exc:  # noqa: BLE001
            status = _status(exc)
            text = _one_line(exc)
            if status and ("UNAVAILABLE" in status or "DEADLINE" in status):
                raise ClientError(f"{what}: cannot reach Triton at {self.url} over {self.protocol} "
                                  f"({status}): {text}", status) from None
            raise ClientError(f"{what}: {text}", status) from None

    def live(self) -> bool:
        return bool(self._call("server live", self._client.is_server_live))

    def ready(self) -> bool:
        return bool(self._call("server ready", self._client.is_server_ready))

    def model_ready(self, name: str) -> bool:
        return bool(self._call(f"model {name} ready", self._client.is_model_ready, name))

    def metadata(self, name: str) -> dict[str, Any]:
        md = self._call(f"model {name} metadata", self._client.get_model_metadata, name)
        if self.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            md = MessageToDict(md, preserving_proto_field_name=True)
        return md

    def model_config(self, name: str) -> dict[str, Any]:
        """The model's configuration as the server loaded it (the JSON form of Triton's ModelConfig)."""
        cfg = self._call(f"model {name} config", self._client.get_model_config, name)
        if self.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            return MessageToDict(cfg.config, preserving_proto_field_name=True)
        return dict(cfg)

    def max_batch_size(self, name: str) -> int:
        return int(self.model_config(name).get("max_batch_size", 0))

    def statistics(self, name: str) -> dict[str, Any]:
        st = self._call(f"model {name} statistics", self._client.get_inference_statistics, name)
        if self.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            st = MessageToDict(st, preserving_proto_field_name=True)
        return st

    def infer_raw(self, items: Sequence[bytes] | np.ndarray, datatype: str = "BYTES",
                  input_name: str = layout.TEXT, shape: Sequence[int] | None = None,
                  model: str | None = None) -> tuple[Any, Any]:
        arr = items if isinstance(items, np.ndarray) else np.array(list(items), dtype=object).reshape(-1, 1)
        inp = self._mod.InferInput(input_name, list(shape or arr.shape), datatype)
        inp.set_data_from_numpy(arr)
        outputs = [self._mod.InferRequestedOutput(layout.LABEL), self._mod.InferRequestedOutput(layout.SCORES)]
        model = model or self.model
        res = self._call(f"infer {model}", self._client.infer, model, [inp], outputs=outputs)
        return res.as_numpy(layout.LABEL), res.as_numpy(layout.SCORES)

    def predict(self, texts: Sequence[str], model: str | None = None) -> list[Prediction]:
        """Labels and scores of `texts` from the ensemble `model` (default: the client's)."""
        labels, scores = self.infer_raw([t.encode("utf-8") for t in texts], model=model)
        return [Prediction(t, lab[0].decode("utf-8") if isinstance(lab[0], bytes) else str(lab[0]),
                           [float(x) for x in s]) for t, lab, s in zip(texts, labels, scores, strict=True)]

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close:
            close()
