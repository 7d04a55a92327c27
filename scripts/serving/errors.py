"""TF Serving's canonical error codes, with their HTTP and gRPC statuses."""

from __future__ import annotations

import grpc

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "RESOURCE_EXHAUSTED": 429,
    "UNKNOWN": 500,
    "CANCELLED": 499,  # TF Serving's CLIENT_CLOSED_REQUEST
}


class ServingError(Exception):
    """An error a client sees as ``{"error": message}`` / a gRPC status."""

    def __init__(self, code: str, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status  # overrides the code's status (413 for a big body)

    @property
    def http_status(self) -> int:
        return self._http_status or HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.UNKNOWN)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)
