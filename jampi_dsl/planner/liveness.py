"""Which names a program may still read at a point of its text, and which names a
block assigns: what the builder needs to decide, at each cut between segments,
which values to keep and which names a loop carries. Plain AST walks, without
recursion on expressions (they can be thousands of operators deep)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from ..grammar import ast

Position = tuple[int, int]


def position(span) -> Position:
    return (span.line, span.column)


def expression_children(expr) -> tuple:
    if isinstance(expr, ast.BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, (ast.Neg, ast.Transpose, ast.Not)):
        return (expr.operand,)
    if isinstance(expr, ast.Call):
        return (*expr.args, *(k.value for k in expr.keywords))
    if isinstance(expr, ast.TupleLit):
        return expr.items
    if isinstance(expr, ast.Index):
        return (expr.target, expr.rows, expr.cols)
    if isinstance(expr, ast.SliceExpr):
        return tuple(e for e in (expr.start, expr.stop) if e is not None)
    return ()


def expression_reads(expr) -> Iterable[ast.Var]:
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Var):
            yield node
        else:
            stack.extend(expression_children(node))


def calls(expr) -> Iterable[ast.Call]:
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Call):
            yield node
        stack.extend(expression_children(node))


def statement_expressions(stmt) -> tuple:
    """The expressions a statement evaluates itself (not those of its nested blocks)."""
    if isinstance(stmt, (ast.Assign, ast.MultiAssign)):
        return (stmt.value,)
    if isinstance(stmt, ast.SliceAssign):
        return (stmt.rows, stmt.cols, stmt.value)
    if isinstance(stmt, ast.ExprStmt):
        return (stmt.expr,)
    if isinstance(stmt, ast.For):
        return (stmt.range_call,)
    if isinstance(stmt, ast.While):
        return (stmt.cond,)
    if isinstance(stmt, ast.If):
        return tuple(cond for cond, _ in stmt.cases)
    if isinstance(stmt, ast.Return):
        return stmt.values
    return ()


def nested_blocks(stmt) -> tuple[ast.Block, ...]:
    if isinstance(stmt, (ast.For, ast.While)):
        return (stmt.body,)
    if isinstance(stmt, ast.If):
        return (*(body for _, body in stmt.cases), *((stmt.orelse,) if stmt.orelse else ()))
    return ()


def walk(statements) -> Iterable:
    """Every statement, nested ones included, in text order; function bodies are not entered."""
    stack = list(reversed(statements))
    while stack:
        stmt = stack.pop()
        yield stmt
        for block in reversed(nested_blocks(stmt)):
            stack.extend(reversed(block.statements))


def assigned(statements) -> set[str]:
    """The names a list of statements (and its nested blocks) binds."""
    names: set[str] = set()
    for stmt in walk(statements):
        if isinstance(stmt, (ast.Assign, ast.SliceAssign)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.MultiAssign):
            names.update(stmt.names)
        elif isinstance(stmt, ast.For):
            names.add(stmt.var)
    return names


def has_blocks(statements) -> bool:
    return any(nested_blocks(s) for s in statements)


class Reads:
    """The reads of one scope's text (the program, or one function's body): a name is live at a
    point if the text reads it at or after that point, or anywhere in a loop around that point
    (the next iteration reads it again)."""

    def __init__(self, statements):
        reads: list[tuple[Position, str]] = []
        self.loops: list[tuple[Position, Position, set[str]]] = []
        for stmt in walk(statements):
            for expr in statement_expressions(stmt):
                reads.extend((position(v.span), v.name) for v in expression_reads(expr))
            if isinstance(stmt, ast.SliceAssign):
                reads.append((position(stmt.span), stmt.name))  # X[r, c] = Y reads the old X
            if isinstance(stmt, (ast.For, ast.While)):
                inside = {v.name for s in walk([stmt]) for e in statement_expressions(s) for v in expression_reads(e)}
                inside |= {s.name for s in walk([stmt]) if isinstance(s, ast.SliceAssign)}
                self.loops.append((position(stmt.span), (stmt.span.end_line, stmt.span.end_column), inside))
        reads.sort()
        self.positions = [p for p, _ in reads]
        self.names = [n for _, n in reads]

    def live(self, at: Position) -> set[str]:
        names = set(self.names[bisect_left(self.positions, at):])
        for start, end, inside in self.loops:
            if start <= at <= end:
                names |= inside
        return names
