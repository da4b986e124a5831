"""The project's exceptions. Library code raises them; only the CLI turns them into exit codes and one line."""

from __future__ import annotations


class TritonfleetError(Exception):
    """Base of every error the CLI reports as one line. `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(TritonfleetError, ValueError):
    """Bad options or arguments: an unknown option, a value of the wrong type, a combination that cannot work."""

    exit_code = 2


class ParityError(TritonfleetError):
    """An export disagrees with the eager model (or int8 agrees on too few labels)."""


class ReleaseError(TritonfleetError):
    """A release is missing, malformed, or its files do not match its SHA256SUMS."""


class NotBuiltError(ReleaseError):
    """The release of a spec has not been built yet (`release build --locate-only`): its key and where it goes."""

    exit_code = 3

    def __init__(self, message: str, key: str = "", path: str = "") -> None:
        super().__init__(message)
        self.key, self.path = key, path


class MonitoringError(TritonfleetError):
    """Prometheus cannot be reached, or refused a query (`tritonfleet status`)."""
