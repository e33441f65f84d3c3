"""Parse and check request bodies, so every bad input is a 4xx naming the field.

Python's ``json`` accepts ``NaN``/``Infinity`` and turns ``1e999`` into
infinity, and its decoder recurses once per nesting level: left alone, each of
these became a 500 somewhere downstream. Here non-finite numbers are caught
at parse time and reported with their path (``messages[0].temperature``),
nesting is bounded, and the chat fields the proxy itself reads are
type-checked before anything uses them.

JSON's ``\\ud800`` escape also decodes to a lone surrogate, a Python string
that cannot be encoded as UTF-8: the encoder, the upstream request and the
store all raised ``UnicodeEncodeError`` on it. Every string and key is
checked here, so such a body is a 400 naming the field, before any of them
sees it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from preroll.serve.errors import RequestError


class _NonFinite:
    """Stands in for a NaN/Infinity literal until its path is known."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str):
    x = float(text)
    return x if math.isfinite(x) else _NonFinite(text)


def parse_json_object(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object, or a :class:`RequestError` (400) naming what is wrong and where."""
    try:
        body = json.loads(raw, parse_constant=_NonFinite, parse_float=_parse_float)
    except RecursionError:
        raise RequestError(f"request body is nested too deeply (limit {max_depth} levels)",
                           param="body", code="too_deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of > 4300 digits
        raise RequestError(f"request body is not valid JSON: {exc}", param="body") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}", param="body")
    _check_tree(body, max_depth)
    return body


def _check_tree(root: Any, max_depth: int) -> None:
    # Iterative: a recursive walk could itself overflow on input the decoder just accepted.
    stack: list[tuple[Any, str, int]] = [(root, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, _NonFinite):
            raise RequestError(f"{path or 'body'} is {node.text}: numbers must be finite", param=path or "body",
                               code="non_finite_number")
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                raise RequestError(f"request body is nested deeper than {max_depth} levels at {path}",
                                   param=path or "body", code="too_deep")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str) and not _encodable(key):
                    raise RequestError(f"a key under {path or 'the body'} is not valid Unicode (a lone surrogate "
                                       f"escape such as \\ud800)", param=path or "body", code="invalid_unicode")
                child_path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
                stack.append((child, child_path, depth + 1))
        elif isinstance(node, str) and not _encodable(node):
            raise RequestError(f"{path or 'body'} is not valid Unicode (it holds a lone surrogate escape such as "
                               f"\\ud800)", param=path or "body", code="invalid_unicode")


def _encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (it holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def optional_str(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"'{field}' must be a string, got {type(value).__name__}", param=field)
    return value


def optional_bool(body: Mapping[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"'{field}' must be true or false, got {value!r}", param=field)
    return value


def message_text(content: Any, where: str) -> str:
    """The text of one message's ``content``: a string, or the ``text`` parts of a list joined."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts, got {type(content).__name__}",
                           param=where)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise RequestError(f"{where}[{j}] must be an object, got {type(part).__name__}", param=f"{where}[{j}]")
        kind = part.get("type")
        if not isinstance(kind, str):
            raise RequestError(f"{where}[{j}].type must be a string", param=f"{where}[{j}].type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{where}[{j}].text must be a string, got {type(text).__name__}",
                                   param=f"{where}[{j}].text")
            texts.append(text)
    return "\n".join(texts)


def prompt_of(body: Mapping[str, Any]) -> str:
    """The text the router reads: the last user message (text parts joined).

    The last user turn is what the next answer must get right, and it is the
    shape of the single-question prompts routing histories hold. Every message
    is shape-checked, not only that one: the upstream would get them all.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    last_user = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object, got {type(message).__name__}",
                               param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str):
            raise RequestError(f"messages[{i}].role must be a string", param=f"messages[{i}].role")
        text = message_text(message.get("content"), f"messages[{i}].content")
        if role == "user":
            last_user = (i, text)
    if last_user is None:
        raise RequestError("no user message to route on", param="messages")
    i, text = last_user
    if not text.strip():
        raise RequestError("the last user message has no text to route on", param=f"messages[{i}].content")
    return text


def check_prompt_size(prompt: str, limit: int, param: str) -> None:
    if len(prompt) > limit:
        raise RequestError(f"{param} has {len(prompt)} characters; limits.max_prompt_chars is {limit}",
                           status=413, param=param, code="prompt_too_large")
