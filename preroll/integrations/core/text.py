"""One prompt-to-text rule for both trainers: the book's text (and default id) of a dataset prompt.

Why one rule: the book addresses a prompt by the sha256 of this text when the
dataset has no id column, and finds its neighbours from it. Two rules (TRL kept
system turns, verl dropped them) gave the same dataset different ids under the
two trainers, so a book could not follow a dataset from one to the other.

The rule: a string is itself; chat messages are the contents of every turn but
the system (and developer) turns, joined by newlines. Why drop those: they are
usually one instruction shared by every prompt, which says nothing about the
prompt and makes every pair of prompts look alike to the neighbour search. A
conversation of system turns only keeps them (the text must not be empty).
Multi-modal content keeps its text pieces.
"""

from __future__ import annotations

from typing import Any, Mapping

#: Roles left out of the text (shared instructions, not the prompt).
INSTRUCTION_ROLES = frozenset({"system", "developer"})


def _content_text(content: Any) -> str:
    if isinstance(content, (list, tuple)):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, Mapping) and c.get("text"))
    return "" if content is None else str(content)


def prompt_text(prompt: Any) -> str:
    """The book's text of a prompt cell: a string, or chat messages ``[{"role", "content"}, ...]``."""
    if isinstance(prompt, str):
        return prompt
    if hasattr(prompt, "tolist") and not isinstance(prompt, Mapping):    # numpy arrays of messages (parquet)
        prompt = prompt.tolist()
    if isinstance(prompt, Mapping):
        prompt = [prompt]
    if not isinstance(prompt, (list, tuple)):
        return str(prompt)
    kept, every = [], []
    for message in prompt:
        if isinstance(message, Mapping):
            text = _content_text(message.get("content", ""))
            instruction = str(message.get("role", "user")) in INSTRUCTION_ROLES
        else:
            text, instruction = str(message), False
        every.append(text)
        if not instruction:
            kept.append(text)
    return "\n".join(kept or every)
