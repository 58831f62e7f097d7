"""``and`` and ``or`` that short-circuit, as the contract says, by rewriting the syntax tree.

A plan evaluates a segment's nodes all together, so ``i < n and X[i, 0] > 0`` would read
``X[n, 0]`` when ``i == n``. Where the right side of an ``and``/``or`` in a condition (or
an assignment) could fail at run time (it indexes a matrix, or calls a user function),
the condition becomes statements first, with a temporary only the rewrite can name:

    if a and b {...}      ->   %sc1 = a != 0
                               if %sc1 { %sc1 = b != 0 }
                               if %sc1 {...}

``or`` guards with ``not %sc1``; a ``while`` recomputes its condition at the end of
its body; in ``if / else if`` a later condition is computed only in the ``else`` of the
earlier ones. Conditions that cannot fail are left alone: they evaluate both sides in
one segment, which is cheaper and gives the same value.
"""

from __future__ import annotations

import itertools
from dataclasses import fields, replace

from ..grammar import ast
from .liveness import expression_children, has_blocks, nested_blocks, statement_expressions


class _Rewriter:
    def __init__(self, builtins: frozenset[str]):
        self.builtins = builtins
        self.names = itertools.count(1)

    # ------------------------------------------------------------ expressions

    def may_fail(self, expr: ast.Expr) -> bool:
        """Whether evaluating ``expr`` can raise at run time: an index out of range, or a user
        function (whose body may index). Iterative: expressions can be thousands deep."""
        stack = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Index) or (isinstance(node, ast.Call) and node.name not in self.builtins):
                return True
            stack.extend(expression_children(node))
        return False

    def anywhere(self, statements) -> bool:
        """Whether any and/or in ``statements`` (function bodies included) needs the rewrite."""
        pending = list(statements)
        while pending:
            stmt = pending.pop()
            if isinstance(stmt, ast.Def):
                pending.extend(stmt.body.statements)
                continue
            for block in nested_blocks(stmt):
                pending.extend(block.statements)
            for expr in statement_expressions(stmt):
                stack = [expr]
                while stack:
                    node = stack.pop()
                    if isinstance(node, ast.BinOp) and node.op in ("and", "or") and self.may_fail(node.right):
                        return True
                    stack.extend(expression_children(node))
        return False

    def needs(self, expr: ast.Expr) -> bool:
        if isinstance(expr, ast.Not):
            return self.needs(expr.operand)
        if isinstance(expr, ast.BinOp) and expr.op in ("and", "or"):
            return self.may_fail(expr.right) or self.needs(expr.left)
        return False

    def lower(self, expr: ast.Expr) -> tuple[list[ast.Stmt], ast.Expr]:
        """Statements that compute ``expr`` with short-circuit, and the expression that then
        holds its value (unchanged when nothing needs it)."""
        if not self.needs(expr):
            return [], expr
        span = expr.span
        if isinstance(expr, ast.Not):
            stmts, value = self.lower(expr.operand)
            return stmts, ast.Not(span, value)
        temp = f"%sc{next(self.names)}"
        left_stmts, left = self.lower(expr.left)
        right_stmts, right = self.lower(expr.right)
        # The new statements sit, zero-width, just before the expression: the builder's liveness
        # goes by text position, and the statement that reads the temporary must come after them
        # (a block's "after" is one column past its end).
        column = max(1, span.column - 1)
        here = span._replace(column=column, end_line=span.line, end_column=column)
        guard = ast.Var(span, temp) if expr.op == "and" else ast.Not(span, ast.Var(span, temp))
        inner = ast.Block((*right_stmts, ast.Assign(here, temp, _truth(right), here)), here)
        return [*left_stmts, ast.Assign(here, temp, _truth(left), here),
                ast.If(here, ((guard, inner),), None)], ast.Var(span, temp)

    def hoist(self, node):
        """Statements for every and/or inside ``node`` (an expression, or a statement's fields)
        that needs them, and ``node`` reading their temporaries instead."""
        if isinstance(node, ast.Expr) and self.needs(node):
            return self.lower(node)
        stmts: list[ast.Stmt] = []
        changes = {}
        for f in fields(node):
            value = getattr(node, f.name)
            if isinstance(value, ast.Expr):
                before, new = self.hoist(value)
            elif isinstance(value, tuple) and any(isinstance(v, ast.Expr | ast.Keyword) for v in value):
                parts = []
                before = []
                for item in value:
                    target = item.value if isinstance(item, ast.Keyword) else item
                    more, new_item = self.hoist(target) if isinstance(target, ast.Expr) else ([], target)
                    before += more
                    parts.append(replace(item, value=new_item) if isinstance(item, ast.Keyword) else new_item)
                new = tuple(parts)
            else:
                continue
            if before:
                stmts += before
                changes[f.name] = new
        return stmts, (replace(node, **changes) if changes else node)

    # ------------------------------------------------------------ statements

    def block(self, block: ast.Block) -> ast.Block:
        return replace(block, statements=tuple(self.statements(block.statements)))

    def statements(self, statements) -> list[ast.Stmt]:
        out: list[ast.Stmt] = []
        for stmt in statements:
            out.extend(self.statement(stmt))
        return out

    def statement(self, stmt: ast.Stmt) -> list[ast.Stmt]:
        if isinstance(stmt, ast.If):
            return self.if_(stmt.cases, stmt.orelse, stmt.span)
        if isinstance(stmt, ast.While):
            before, cond = self.hoist(stmt.cond)
            body = self.block(stmt.body)
            if before:  # the condition again after each iteration
                body = replace(body, statements=(*body.statements, *before))
            return [*before, replace(stmt, cond=cond, body=body)]
        if isinstance(stmt, ast.For):
            return [replace(stmt, body=self.block(stmt.body))]
        if isinstance(stmt, ast.Def):
            # A function without blocks may be called inside an expression: its and/or stay as
            # they are rather than give it a branch that would forbid that.
            return [replace(stmt, body=self.block(stmt.body))] if has_blocks(stmt.body.statements) else [stmt]
        if isinstance(stmt, ast.Param):
            return [stmt]
        before, new = self.hoist(stmt)
        return [*before, new]

    def if_(self, cases, orelse: ast.Block | None, span) -> list[ast.Stmt]:
        orelse = self.block(orelse) if orelse is not None else None
        cases = [(cond, self.block(body)) for cond, body in cases]
        if not any(self.hoist(cond)[0] for cond, _ in cases):
            return [ast.If(span, tuple(cases), orelse)]
        (cond, body), rest = cases[0], cases[1:]
        before, value = self.hoist(cond)
        if rest:  # later conditions are computed only when this one is false
            inner = self.if_(rest, orelse, rest[0][0].span)
            orelse = ast.Block(tuple(inner), rest[0][0].span)
        return [*before, ast.If(span, ((value, body),), orelse)]


def _truth(value: ast.Expr) -> ast.Expr:
    """1.0 or 0.0, as and/or give; ``or`` also refuses a matrix operand with its own message."""
    return ast.BinOp(value.span, "or", value, ast.Number(value.span, 0.0))


def short_circuit(program: ast.Program, builtins: frozenset[str]) -> ast.Program:
    """``program`` with every ``and``/``or`` whose right side may fail evaluated lazily (the
    program itself when there is none, which is nearly always: checked without recursion)."""
    rewriter = _Rewriter(builtins)
    if not rewriter.anywhere(program.statements):
        return program
    return replace(program, statements=tuple(rewriter.statements(program.statements)))
