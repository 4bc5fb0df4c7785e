"""Errors, one class per wire ``code`` of the API's error body."""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional


class StacyVMError(Exception):
    """An error the server answered (or a stream ended with).

    ``code`` is the wire code (``"NOT_FOUND"``...), ``request_id`` the
    request's ID to quote in a bug report, ``hint`` the server's advice.
    """

    code: str = ""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        request_id: str = "",
        hint: str = "",
        body: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        if code:
            self.code = code
        self.request_id = request_id
        self.hint = hint
        self.body: Mapping[str, Any] = body or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        s = f"{self.code or 'HTTP ' + str(self.status)}: {self.message}"
        if self.hint:
            s += f" (hint: {self.hint})"
        if self.request_id:
            s += f" [request {self.request_id}]"
        return s


class BadRequestError(StacyVMError):
    code = "BAD_REQUEST"


class AuthError(StacyVMError):
    """A missing or wrong API key (401)."""

    code = "UNAUTHORIZED"


class ForbiddenError(StacyVMError):
    """The request's Origin is not in the server's ``cors_origins`` (403)."""

    code = "FORBIDDEN"


class NotFoundError(StacyVMError):
    code = "NOT_FOUND"


class SandboxDestroyedError(NotFoundError):
    code = "SANDBOX_DESTROYED"


class SandboxFileNotFoundError(NotFoundError):
    code = "FILE_NOT_FOUND"


class MethodNotAllowedError(StacyVMError):
    code = "METHOD_NOT_ALLOWED"


class ExecTimeoutError(StacyVMError):
    """A buffered command ran past its timeout (408). ``result`` holds what it printed."""

    code = "TIMEOUT"
    result: Any = None


class ConflictError(StacyVMError):
    code = "CONFLICT"


class LimitError(StacyVMError):
    """A body over the limit (413) or too many sandboxes (429).

    ``retry_after`` is the server's Retry-After in seconds, when it sent one.
    """

    code = "RESOURCE_LIMIT"


class MisdirectedRequestError(StacyVMError):
    """The Host header names a host the server does not answer to (421)."""

    code = "MISDIRECTED_REQUEST"


class UnsupportedMediaTypeError(StacyVMError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class UnimplementedError(StacyVMError):
    code = "UNIMPLEMENTED"


class UnavailableError(StacyVMError):
    """The provider's runtime is down or missing (503)."""

    code = "UNAVAILABLE"


class InternalError(StacyVMError):
    code = "INTERNAL_ERROR"


class IncompleteStreamError(StacyVMError):
    """A stream ended without its exit frame (the connection dropped)."""


ERRORS: dict[str, type[StacyVMError]] = {
    c.code: c
    for c in (
        BadRequestError,
        AuthError,
        ForbiddenError,
        NotFoundError,
        SandboxDestroyedError,
        SandboxFileNotFoundError,
        MethodNotAllowedError,
        ExecTimeoutError,
        ConflictError,
        LimitError,
        MisdirectedRequestError,
        UnsupportedMediaTypeError,
        UnimplementedError,
        UnavailableError,
        InternalError,
    )
}

_BY_STATUS: dict[int, type[StacyVMError]] = {
    400: BadRequestError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: ExecTimeoutError,
    409: ConflictError,
    413: LimitError,
    415: UnsupportedMediaTypeError,
    421: MisdirectedRequestError,
    429: LimitError,
    501: UnimplementedError,
    503: UnavailableError,
}


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def error_from(
    status: int, body: bytes, headers: Optional[Mapping[str, str]] = None, request_id: str = ""
) -> StacyVMError:
    """The typed error for an HTTP error answer: by wire code, else by status."""
    data: dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else {}
        if isinstance(parsed, dict):
            data = parsed
    except ValueError:
        pass
    code = str(data.get("code", ""))
    cls = ERRORS.get(code) or _BY_STATUS.get(status) or (InternalError if status >= 500 else StacyVMError)
    message = str(data.get("message") or body[:200].decode("utf-8", "replace") or f"HTTP {status}")
    return cls(
        message,
        status=status,
        code=code or cls.code,
        request_id=str(data.get("request_id") or request_id),
        hint=str(data.get("hint", "")),
        body=data,
        retry_after=_retry_after((headers or {}).get("retry-after")),
    )


def error_from_frame(frame: Mapping[str, Any]) -> StacyVMError:
    """The typed error for a stream's error frame."""
    code = str(frame.get("code", ""))
    cls = ERRORS.get(code, StacyVMError)
    return cls(
        str(frame.get("message", "stream failed")),
        code=code,
        request_id=str(frame.get("request_id", "")),
        hint=str(frame.get("hint", "")),
        body=dict(frame),
    )
