"""The proxy's endpoints, one :class:`fastapi.APIRouter` per concern.

:mod:`.chat` (``/v1/chat/completions``, ``/v1/route``), :mod:`.feedback`
(``/v1/feedback``) and :mod:`.admin` (``/health``, ``/v1/models``, ``/stats``,
``/v1/refit``). Each receives the shared :class:`~preroll.serve.state.ServeState`
as a dependency.
"""

from preroll.serve.routers import admin, chat, feedback

__all__ = ["admin", "chat", "feedback"]
