"""Syntax tree of a .lin program. Every node keeps the span it was parsed from,
so any later stage can point a caret at the text that caused an error."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Source, Span


@dataclass(frozen=True)
class Expr:
    span: Span


@dataclass(frozen=True)
class Number(Expr):
    value: float


@dataclass(frozen=True)
class String(Expr):
    value: str


@dataclass(frozen=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True)
class Var(Expr):
    name: str


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call(Expr):
    name: str
    args: tuple[Expr, ...]
    keywords: tuple[Keyword, ...]
    name_span: Span


@dataclass(frozen=True)
class TupleLit(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr


@dataclass(frozen=True)
class Transpose(Expr):
    operand: Expr


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr


@dataclass(frozen=True)
class BinOp(Expr):
    op: str  # @, or an elementwise operator of jampi_dsl.ops: + - * / ** < <= > >= == != and or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class SliceExpr(Expr):
    """``a:b`` inside ``X[...]``; either bound may be missing."""

    start: Expr | None
    stop: Expr | None


@dataclass(frozen=True)
class Index(Expr):
    """``X[r, c]``: each of ``rows``/``cols`` is an expression (one index) or a SliceExpr."""

    target: Expr
    rows: Expr
    cols: Expr


@dataclass(frozen=True)
class Stmt:
    span: Span


@dataclass(frozen=True)
class Param(Stmt):
    name: str
    value: Expr  # Number, String or Bool
    name_span: Span


@dataclass(frozen=True)
class Assign(Stmt):
    name: str
    value: Expr
    name_span: Span


@dataclass(frozen=True)
class MultiAssign(Stmt):
    """``a, b = f(...)``: several results of one call."""

    names: tuple[str, ...]
    value: Expr
    name_spans: tuple[Span, ...]


@dataclass(frozen=True)
class ExprStmt(Stmt):
    expr: Expr


@dataclass(frozen=True)
class SliceAssign(Stmt):
    """``X[r, c] = Y``: rebinds X to a copy with that region replaced."""

    name: str
    rows: Expr
    cols: Expr
    value: Expr
    name_span: Span


@dataclass(frozen=True)
class Block:
    statements: tuple[Stmt, ...]
    span: Span  # from '{' to '}'


@dataclass(frozen=True)
class For(Stmt):
    var: str
    var_span: Span
    range_call: Call  # range(...) with its arguments
    body: Block


@dataclass(frozen=True)
class While(Stmt):
    cond: Expr
    body: Block


@dataclass(frozen=True)
class If(Stmt):
    """``if c {...} else if d {...} else {...}``: ``cases`` in order, ``orelse`` may be None."""

    cases: tuple[tuple[Expr, Block], ...]
    orelse: Block | None


@dataclass(frozen=True)
class Def(Stmt):
    name: str
    params: tuple[str, ...]
    param_spans: tuple[Span, ...]
    body: Block
    name_span: Span


@dataclass(frozen=True)
class Return(Stmt):
    values: tuple[Expr, ...]


@dataclass(frozen=True)
class Break(Stmt):
    pass


@dataclass(frozen=True)
class Program:
    statements: tuple[Stmt, ...]
    source: Source


def source_text(expr: Expr) -> str:
    """The exact text an expression was parsed from (used to label print output)."""
    span = expr.span
    lines = span.source.text.splitlines()[span.line - 1 : span.end_line]
    if not lines:
        return ""
    if len(lines) == 1:
        return lines[0][span.column - 1 : span.end_column - 1]
    lines[0] = lines[0][span.column - 1 :]
    lines[-1] = lines[-1][: span.end_column - 1]
    return " ".join(line.strip() for line in lines)
