"""The service's own errors.

Two kinds, kept apart because they travel differently: a
:class:`RequestError` is a client's mistake and becomes an HTTP 4xx with a JSON
body naming the field; a :class:`ServeSetupError` is an operator's mistake
found at start-up and becomes a one-line message and a non-zero exit. Both
derive from the package's existing input-error classes (``ValueError``
subclasses), so a caller that catches bad input catches these too.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from preroll.data.errors import RecordError


class ServeSetupError(RecordError):
    """A serve set-up that must not start (e.g. a public address without a token)."""


class StoreError(RecordError):
    """A history store file that cannot be used (not SQLite, or a value SQLite cannot hold)."""


class RequestError(ValueError):
    """A client mistake, answered with an OpenAI-style error body.

    ``param`` names the offending field as a path into the request body
    (``messages[2].content[0].text``), so a client sees what to fix.
    """

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str = "invalid_request", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code,
                              headers=self.headers)


def error_body(message: str, *, param: str | None = None, code: str = "invalid_request",
               kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, *, param: str | None = None, code: str = "invalid_request",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_body(message, param=param, code=code, kind=kind), status_code=status,
                        headers=headers)


class StoreUnavailableError(StoreError):
    """The history store cannot take this read or write now (disk or database full, I/O error, locked).

    Distinct from :class:`StoreError` (a file that is not a usable store at
    all): the store is fine and nothing acknowledged is lost, but this request's
    data could not be written, so the client is told to retry (HTTP 507 when
    full, 503 otherwise) while routing, which needs no write, keeps serving.
    """

    def __init__(self, message: str, *, full: bool, path=None) -> None:
        super().__init__(message, path=path)
        self.full = full

    def response(self) -> JSONResponse:
        if self.full:
            return error_response(507, f"the history store is full ({self.reason}); nothing from this request was "
                                       "stored, routing keeps serving", code="store_full")
        return error_response(503, f"the history store is unavailable ({self.reason}); nothing from this request "
                                   "was stored, retry shortly", code="store_unavailable",
                              headers={"retry-after": "1"})
