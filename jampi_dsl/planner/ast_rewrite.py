"""Rewrites of the syntax tree that move part of an expression into statements before it.

Both the short-circuit of ``and``/``or`` (:mod:`.short_circuit`) and the calls of user
functions with blocks (:mod:`.call_hoist`) take a piece out of an expression, compute it
in statements of its own, and leave a temporary only the rewrite can name (``%...``) in
its place. What differs is which piece and how it is computed (:meth:`Hoister.needs`,
:meth:`Hoister.lower`); where the statements go is shared, and is the subtle part:

- before the statement that holds the expression, zero-width, one column before the
  expression: the builder's liveness goes by text position;
- a ``while`` condition: before the loop and again at the end of its body;
- an ``else if`` condition: inside the ``else`` of the earlier ones, so it is computed
  only when they are false.
"""

from __future__ import annotations

import itertools
from dataclasses import fields, replace

from ..errors import ParseError
from ..grammar import ast
from .liveness import (
    calls,
    expression_children,
    has_blocks,
    nested_blocks,
    statement_expressions,
    walk,
)


def before(span: ast.Span) -> ast.Span:
    """A zero-width position one column before ``span``: where hoisted statements sit."""
    column = max(1, span.column - 1)
    return span._replace(column=column, end_line=span.line, end_column=column)


def block_functions(program: ast.Program) -> frozenset[str]:
    """User functions instantiated as blocks: those with a loop or an ``if`` of their own, and
    those that call one (their body then holds its hoisted call, a statement)."""
    defs = [s for s in program.statements if isinstance(s, ast.Def)]
    callees = {d.name: {c.name for stmt in walk(d.body.statements) for e in statement_expressions(stmt)
                        for c in calls(e)} for d in defs}
    found = {d.name for d in defs if has_blocks(d.body.statements)}
    grew = True
    while grew:  # a fixed point: recursion is refused later, and a cycle ends here anyway
        grew = False
        for name, called in callees.items():
            if name not in found and called & found:
                found.add(name)
                grew = True
    return frozenset(found)


class Hoister:
    prefix = "%t"

    def __init__(self):
        self.names = itertools.count(1)

    def temp(self) -> str:
        return f"{self.prefix}{next(self.names)}"

    # ------------------------------------------------------------ what to hoist

    def needs(self, expr: ast.Expr) -> bool:
        raise NotImplementedError

    def lower(self, expr: ast.Expr) -> tuple[list[ast.Stmt], ast.Expr]:
        """Statements computing ``expr`` (for which ``needs`` holds), and what then stands for it."""
        raise NotImplementedError

    def anywhere(self, statements) -> bool:
        """Whether any expression in ``statements`` (function bodies included) needs a rewrite;
        iterative, as expressions can be thousands deep."""
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
                    if self.needs(node):
                        return True
                    stack.extend(expression_children(node))
        return False

    # ------------------------------------------------------------ expressions

    def hoist(self, node):
        """Statements for every piece inside ``node`` (an expression, or a statement's fields)
        that needs them, and ``node`` reading their temporaries instead."""
        if isinstance(node, ast.Expr) and self.needs(node):
            return self.lower(node)
        return self.hoist_fields(node)

    def hoist_fields(self, node):
        """As :meth:`hoist`, for the expressions inside ``node`` but not ``node`` itself."""
        stmts: list[ast.Stmt] = []
        changes = {}
        for f in fields(node):
            value = getattr(node, f.name)
            if isinstance(value, ast.Expr):
                more, new = self.hoist(value)
            elif isinstance(value, tuple) and any(isinstance(v, ast.Expr | ast.Keyword) for v in value):
                parts = []
                more = []
                for item in value:
                    target = item.value if isinstance(item, ast.Keyword) else item
                    found, new_item = self.hoist(target) if isinstance(target, ast.Expr) else ([], target)
                    more += found
                    parts.append(replace(item, value=new_item) if isinstance(item, ast.Keyword) else new_item)
                new = tuple(parts)
            else:
                continue
            if more:
                stmts += more
                changes[f.name] = new
        return stmts, (replace(node, **changes) if changes else node)

    # ------------------------------------------------------------ statements

    def program(self, program: ast.Program) -> ast.Program:
        if not self.anywhere(program.statements):
            return program  # nearly always: checked without recursion
        out: list[ast.Stmt] = []
        for stmt in program.statements:
            try:
                out.extend(self.statement(stmt))
            except RecursionError:  # blocks nested hundreds deep around a rewrite
                raise ParseError("blocks nested too deeply", stmt.span) from None
        return replace(program, statements=tuple(out))

    def block(self, block: ast.Block) -> ast.Block:
        if not self.anywhere(block.statements):  # untouched: no descent into deep nests for nothing
            return block
        return replace(block, statements=tuple(self.statements(block.statements)))

    def statements(self, statements) -> list[ast.Stmt]:
        out: list[ast.Stmt] = []
        for stmt in statements:
            out.extend(self.statement(stmt))
        return out

    def function(self, stmt: ast.Def) -> ast.Def:
        return replace(stmt, body=self.block(stmt.body))

    def statement(self, stmt: ast.Stmt) -> list[ast.Stmt]:
        if isinstance(stmt, ast.If):
            return self.if_(stmt.cases, stmt.orelse, stmt.span)
        if isinstance(stmt, ast.While):
            first, cond = self.hoist(stmt.cond)
            body = self.block(stmt.body)
            if first:  # the condition again after each iteration
                body = replace(body, statements=(*body.statements, *first))
            return [*first, replace(stmt, cond=cond, body=body)]
        if isinstance(stmt, ast.For):
            first, range_call = self.hoist_fields(stmt.range_call)
            return [*first, replace(stmt, range_call=range_call, body=self.block(stmt.body))]
        if isinstance(stmt, ast.Def):
            return [self.function(stmt)]
        if isinstance(stmt, ast.Param):
            return [stmt]
        first, new = self.hoist(stmt)
        return [*first, new]

    def if_(self, cases, orelse: ast.Block | None, span) -> list[ast.Stmt]:
        orelse = self.block(orelse) if orelse is not None else None
        cases = [(cond, self.block(body)) for cond, body in cases]
        if not any(self.hoist(cond)[0] for cond, _ in cases):
            return [ast.If(span, tuple(cases), orelse)]
        (cond, body), rest = cases[0], cases[1:]
        first, value = self.hoist(cond)
        if rest:  # later conditions are computed only when this one is false
            inner = self.if_(rest, orelse, rest[0][0].span)
            orelse = ast.Block(tuple(inner), rest[0][0].span)
        return [*first, ast.If(span, ((value, body),), orelse)]
