"""The service's own errors.

Kinds kept apart because they travel differently: a :class:`RequestError` is
a client's mistake and becomes an HTTP 4xx with a JSON body naming the field;
a :class:`~preroll.errors.ServeSetupError` is an operator's mistake found at
start-up and a :class:`~preroll.errors.StoreError` an unusable history store;
both become a one-line message and a non-zero exit. All three are
:class:`~preroll.errors.ServeError` (and ``ValueError``), defined once:
the set-up and store errors in :mod:`preroll.errors`, re-exported here.

fastapi is imported only to build a reply, so the history store (``preroll
feedback``) and these classes work without the ``serve`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from preroll.errors import ServeError, ServeSetupError, StoreError

if TYPE_CHECKING:
    from fastapi.responses import JSONResponse

__all__ = ["RequestError", "ServeError", "ServeSetupError", "StoreError", "error_body", "error_response"]


class RequestError(ServeError, ValueError):
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
    from fastapi.responses import JSONResponse

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
