"""TF Serving's canonical error codes, with their HTTP and gRPC statuses.

``ServingError`` is the one error a client sees: REST answers ``{"error": message}``
with the code's HTTP status, gRPC aborts with the code. Anything else that escapes a
handler is a server fault and is answered INTERNAL.
"""

from __future__ import annotations

import re
from typing import Any

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

# The canonical codes by number (TensorFlow's error_code, google.rpc.Code).
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


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


def failed_precondition(message: str) -> ServingError:
    return ServingError("FAILED_PRECONDITION", message)


_TF_NOISE = re.compile(
    r"^(Graph execution error:|Detected at node .*|\s+File .*|\s*\[\[\{\{node .*"
    r"|<stack traces unavailable>)$"
)


def from_tf_error(exc: Any) -> ServingError:
    """A ``tf.errors.OpError`` as the client sees it from TF Serving: its own canonical
    code, and its message without the Python-side decoration (the "Graph execution error"
    header, the Python stack of the node, ``[[{{node …}}]]`` and ``[Op:…]`` suffixes)."""
    text = str(getattr(exc, "message", "") or exc)
    lines = [
        re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", line).strip()
        for line in text.splitlines()
        if line.strip() and not _TF_NOISE.match(line)
    ]
    message = "; ".join(line for line in lines if line)[:1000] or type(exc).__name__
    code = CODE_NAMES.get(int(getattr(exc, "error_code", 2)), "UNKNOWN")
    return ServingError(code, message)
