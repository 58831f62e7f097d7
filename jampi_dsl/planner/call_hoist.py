"""Calls of user functions with a loop or a branch, wherever they stand in an expression.

The builder instantiates such a function as blocks of statements, which cannot sit inside
an expression; so each call becomes a statement of its own first, with a temporary only
the rewrite can name, and the expression reads that:

    print(sum(g(X)) + 1)     ->    %call1 = g(X)
                                   print(sum(%call1) + 1)

Arguments are hoisted before the call that takes them (``g(g(X))``), a ``while`` condition
is recomputed at the end of its body, and an ``else if`` condition only in the ``else`` of
the earlier ones (:mod:`.ast_rewrite`). Run after :mod:`.short_circuit`, so a call on the
right of an ``and``/``or`` is already inside the branch that guards it. A call that is
already a statement (``x = g(...)``, ``a, b = g(...)``, ``g(...)``) stays as it is.
"""

from __future__ import annotations

from dataclasses import replace

from ..grammar import ast
from .ast_rewrite import Hoister, before, block_functions


class _CallHoist(Hoister):
    prefix = "%call"

    def __init__(self, block_functions: frozenset[str]):
        super().__init__()
        self.block_functions = block_functions
        self.anchor: ast.Span | None = None  # the statement being rewritten

    # Every statement hoisted out of one statement sits, zero-width, where that statement starts:
    # the builder cuts its segments at a block (a call's loop) and keeps the names read after
    # that point, so every temporary must be read after every hoisted statement's position.

    def needs(self, expr: ast.Expr) -> bool:
        return isinstance(expr, ast.Call) and expr.name in self.block_functions

    def lower(self, expr: ast.Call) -> tuple[list[ast.Stmt], ast.Expr]:
        first, call = self.hoist_fields(expr)  # its arguments' own calls come first
        here = before(self.anchor or expr.span)
        temp = self.temp()
        return [*first, ast.Assign(here, temp, call, here)], ast.Var(expr.span, temp)

    def statement(self, stmt: ast.Stmt) -> list[ast.Stmt]:
        outer, self.anchor = self.anchor, stmt.span
        try:
            return self._statement(stmt)
        finally:
            self.anchor = outer

    def _statement(self, stmt: ast.Stmt) -> list[ast.Stmt]:
        value = {ast.Assign: "value", ast.MultiAssign: "value", ast.ExprStmt: "expr"}.get(type(stmt))
        if value is not None and self.needs(getattr(stmt, value)):
            first, call = self.hoist_fields(getattr(stmt, value))
            return [*first, replace(stmt, **{value: call})]
        return super().statement(stmt)


def hoist_calls(program: ast.Program) -> ast.Program:
    """``program`` with every call of a user function that has blocks, or calls one, made a
    statement."""
    blocky = block_functions(program)
    if not blocky:
        return program
    return _CallHoist(blocky).program(program)
