"""A small OpenAI-compatible backend, and a way to run any ASGI app on loopback.

Used by the tests and the load test so that they exercise the proxy over real
HTTP without reaching any real model. The backend echoes the last user
message, can stream, and has knobs to fail or stall so fallback paths can be
tested. Run one on its own with::

    python -m preroll.serve.testing --name small --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


@dataclass
class FakeBackend:
    """Behaviour of one fake upstream; change the attributes while it runs."""

    name: str
    fail_status: int | None = None     # answer chat requests with this HTTP status
    delay_s: float = 0.0               # sleep before answering (a stall, to trigger timeouts)
    stream_chunks: int = 3             # content pieces in a streamed answer
    raw_body: bytes | None = None      # answer with exactly these bytes (a broken upstream)...
    raw_status: int = 200              # ...and this status
    pad_bytes: int = 0                 # add this many bytes to every answer, sent in 64 KiB chunks (a runaway one)
    # The last 1,000 request bodies and Authorization headers seen, newest last.
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))

    def reply_text(self, body: dict[str, Any]) -> str:
        return f"[{self.name}] {_last_user_text(body)}"


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def create_fake_backend_app(backend: FakeBackend):
    """A FastAPI app answering ``GET /v1/models`` and ``POST /v1/chat/completions``."""
    app = FastAPI(title=f"fake backend {backend.name}")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": backend.name, "object": "model", "owned_by": "preroll-test"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        backend.requests.append({"body": body, "authorization": request.headers.get("authorization")})
        if backend.delay_s:
            await asyncio.sleep(backend.delay_s)
        if backend.fail_status is not None:
            return JSONResponse({"error": {"message": f"{backend.name} is failing on purpose",
                                           "type": "server_error"}}, status_code=backend.fail_status)
        if backend.raw_body is not None:
            return Response(backend.raw_body, status_code=backend.raw_status, media_type="application/json")
        try:
            text = backend.reply_text(body)
        except (AttributeError, TypeError):  # what a real server answers to messages it cannot read
            return JSONResponse({"error": {"message": "malformed messages", "type": "invalid_request_error"}},
                                status_code=400)
        created = int(time.time())
        model = body.get("model", backend.name)
        if not body.get("stream") and backend.pad_bytes:
            head = json.dumps({"id": f"chatcmpl-{backend.name}", "object": "chat.completion", "model": model,
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": text}}]})[:-1]

            async def padded():
                yield f'{head}, "padding": "'.encode()
                left = backend.pad_bytes
                while left > 0:
                    n = min(left, 65536)
                    yield b"x" * n
                    left -= n
                    await asyncio.sleep(0)
                yield b'"}'

            return StreamingResponse(padded(), media_type="application/json")
        if not body.get("stream"):
            return {"id": f"chatcmpl-{backend.name}", "object": "chat.completion", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(text.split()),
                              "total_tokens": 2 * len(text.split())}}

        n = max(1, backend.stream_chunks)
        step = max(1, -(-len(text) // n))
        pieces = [text[i:i + step] for i in range(0, len(text), step)] or [""]

        async def events():
            if backend.pad_bytes:  # one comment line of padding (SSE ignores it), then the answer
                left = backend.pad_bytes
                yield ": "
                while left > 0:
                    yield "x" * min(left, 65536)
                    left -= 65536
                    await asyncio.sleep(0)
                yield "\n\n"
            for piece in pieces:
                chunk = {"id": f"chatcmpl-{backend.name}", "object": "chat.completion.chunk",
                         "created": created, "model": model,
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
                await asyncio.sleep(0)
            done = {"id": f"chatcmpl-{backend.name}", "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(done)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a daemon thread; yield its base URL (``http://host:port``).

    Port 0 picks a free port: the socket is bound here first, so the URL is
    known before the server starts and two tests never race for a port.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"server on {host}:{bound_port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake OpenAI-compatible backend on loopback.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=None)
    args = parser.parse_args(argv)
    import uvicorn

    backend = FakeBackend(args.name, fail_status=args.fail_status, delay_s=args.delay_s)
    uvicorn.run(create_fake_backend_app(backend), host=args.host, port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
