"""``--keep "0.1 <= p_success <= 0.9"``: a tiny, safe filter language over prediction columns.

Why not ``eval``: the expression comes from a command line or a config file,
and a filter must never run code. The grammar is small enough to read in one
breath::

    expr    := or
    or      := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | chain
    chain   := operand (cmp operand)+        # 0.1 <= p_success <= 0.9, as in Python
    operand := NUMBER | COLUMN
    cmp     := "<" | "<=" | ">" | ">=" | "==" | "!="

Columns are the scorer's output columns (``p_success``, ``p_std``, ``alpha``,
``beta``). A filter is parsed once into a tree and evaluated on numpy arrays,
a whole batch at a time.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Mapping, NoReturn

import numpy as np

from preroll.errors import InputError

PREDICTION_COLUMNS = ("p_success", "p_std", "alpha", "beta")
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
            "==": operator.eq, "!=": operator.ne}
_TOKEN = re.compile(r"\s*(?:(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op><=|>=|==|!=|<|>)"
                    r"|(?P<paren>[()])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))")


class KeepExpressionError(InputError):
    """A filter expression that does not parse or names an unknown column (one line, with the position)."""

    def __init__(self, expression: str, position: int, message: str) -> None:
        self.expression = expression
        self.position = position
        super().__init__(f"--keep {expression!r}: {message} at character {position + 1}")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokenize(expression: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(expression):
        if expression[pos:].strip() == "":
            break
        m = _TOKEN.match(expression, pos)
        if m is None or m.end() == pos:
            start = len(expression) - len(expression[pos:].lstrip())
            raise KeepExpressionError(expression, start, f"unexpected character {expression[start]!r}")
        kind = m.lastgroup
        assert kind is not None   # every alternative of _TOKEN is a named group
        text = m.group(kind)
        tokens.append(_Token(kind, text, m.start(kind)))
        pos = m.end()
    tokens.append(_Token("end", "", len(expression)))
    return tokens


# -- the parsed tree -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Chain:
    operands: tuple  # Number | Column
    ops: tuple[str, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple


@dataclass(frozen=True)
class Not:
    part: object


class _Parser:
    def __init__(self, expression: str, columns: tuple[str, ...]) -> None:
        self.expression = expression
        self.columns = columns
        self.tokens = _tokenize(expression)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: _Token, message: str) -> NoReturn:
        raise KeepExpressionError(self.expression, token.pos, message)

    def parse(self):
        if self.peek().kind == "end":
            self.fail(self.peek(), "empty expression")
        tree = self.parse_bool("or")
        if self.peek().kind != "end":
            self.fail(self.peek(), f"unexpected {self.peek().text!r}")
        return tree

    def parse_bool(self, word: str):
        sub = (lambda: self.parse_bool("and")) if word == "or" else self.parse_unary
        parts = [sub()]
        while self.peek().kind == "word" and self.peek().text.lower() == word:
            self.take()
            parts.append(sub())
        return parts[0] if len(parts) == 1 else BoolOp(word, tuple(parts))

    def parse_unary(self):
        token = self.peek()
        if token.kind == "word" and token.text.lower() == "not":
            self.take()
            return Not(self.parse_unary())
        if token.kind == "paren" and token.text == "(":
            self.take()
            inner = self.parse_bool("or")
            closing = self.take()
            if closing.text != ")":
                self.fail(closing, "expected ')'")
            return inner
        return self.parse_chain()

    def parse_operand(self):
        token = self.take()
        if token.kind == "number":
            return Number(float(token.text))
        if token.kind == "word" and token.text.lower() not in ("and", "or", "not"):
            if token.text not in self.columns:
                self.fail(token, f"unknown column {token.text!r} (known: {', '.join(self.columns)})")
            return Column(token.text)
        self.fail(token, "expected a number or a column" + (f", got {token.text!r}" if token.text else
                                                             ", got the end of the expression"))

    def parse_chain(self):
        operands = [self.parse_operand()]
        ops = []
        while self.peek().kind == "op":
            ops.append(self.take().text)
            operands.append(self.parse_operand())
        if not ops:
            self.fail(self.peek(), "expected a comparison (<, <=, >, >=, ==, !=)"
                      + (f", got {self.peek().text!r}" if self.peek().text else ""))
        if not any(isinstance(o, Column) for o in operands):
            self.fail(self.tokens[self.i - 1], "a comparison needs a column")
        return Chain(tuple(operands), tuple(ops))


@dataclass(frozen=True)
class KeepFilter:
    """A parsed ``--keep`` expression; call ``mask(columns)`` on a batch."""

    expression: str
    tree: object

    def mask(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(_evaluate(self.tree, columns), dtype=bool)

    def bounds(self, column: str = "p_success") -> tuple[float, float] | None:
        """The interval on ``column`` when the filter is a conjunction of bounds on it alone (for shading a plot)."""
        chains = [self.tree] if isinstance(self.tree, Chain) else (
            list(self.tree.parts) if isinstance(self.tree, BoolOp) and self.tree.op == "and" else None)
        if not chains or not all(isinstance(c, Chain) for c in chains):
            return None
        lo, hi = -np.inf, np.inf
        for chain in chains:
            for left, op, right in zip(chain.operands[:-1], chain.ops, chain.operands[1:], strict=True):
                if isinstance(left, Column) and isinstance(right, Number) and left.name == column:
                    value = right.value
                elif isinstance(left, Number) and isinstance(right, Column) and right.name == column:
                    value, op = left.value, {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
                else:
                    return None
                if op in (">", ">="):
                    lo = max(lo, value)
                elif op in ("<", "<="):
                    hi = min(hi, value)
                else:
                    return None
        return float(lo), float(hi)


def _value(node, columns):
    return node.value if isinstance(node, Number) else np.asarray(columns[node.name], dtype=float)


def _evaluate(node, columns):
    if isinstance(node, Chain):
        result = True
        for left, op, right in zip(node.operands[:-1], node.ops, node.operands[1:], strict=True):
            result = np.logical_and(result, _COMPARE[op](_value(left, columns), _value(right, columns)))
        return result
    if isinstance(node, Not):
        return np.logical_not(_evaluate(node.part, columns))
    combine = np.logical_and if node.op == "and" else np.logical_or
    result = _evaluate(node.parts[0], columns)
    for part in node.parts[1:]:
        result = combine(result, _evaluate(part, columns))
    return result


#: Longest --keep expression accepted: a filter is a few comparisons, not a program.
MAX_KEEP_CHARS = 4096
#: Deepest parenthesis nesting accepted (the parser and the evaluator recurse once per level).
MAX_KEEP_DEPTH = 32


def parse_keep(expression: str, columns: tuple[str, ...] = PREDICTION_COLUMNS) -> KeepFilter:
    """Parse ``expression``; a bad one raises :class:`KeepExpressionError` naming the position."""
    if not isinstance(expression, str):
        raise TypeError("a keep expression is a string")
    if len(expression) > MAX_KEEP_CHARS:
        raise InputError(f"{len(expression):,} characters long; at most {MAX_KEEP_CHARS:,}", field="--keep")
    depth = deepest = 0
    for char in expression:
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
    if deepest > MAX_KEEP_DEPTH:
        raise InputError(f"parentheses nest {deepest} deep; at most {MAX_KEEP_DEPTH}", field="--keep")
    try:
        return KeepFilter(expression, _Parser(expression, tuple(columns)).parse())
    except RecursionError:
        raise InputError("nests too deeply (operators or parentheses)", field="--keep") from None
