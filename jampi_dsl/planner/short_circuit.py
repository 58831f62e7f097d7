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

from ..grammar import ast
from .ast_rewrite import Hoister, before, block_functions
from .liveness import expression_children


class _ShortCircuit(Hoister):
    prefix = "%sc"

    def __init__(self, builtins: frozenset[str], blocky: frozenset[str]):
        super().__init__()
        self.builtins = builtins
        self.blocky = blocky

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

    def needs(self, expr: ast.Expr) -> bool:
        if isinstance(expr, ast.Not):
            return self.needs(expr.operand)
        if isinstance(expr, ast.BinOp) and expr.op in ("and", "or"):
            return self.may_fail(expr.right) or self.needs(expr.left)
        return False

    def lower(self, expr: ast.Expr) -> tuple[list[ast.Stmt], ast.Expr]:
        span = expr.span
        if isinstance(expr, ast.Not):
            stmts, value = self.lower(expr.operand) if self.needs(expr.operand) else ([], expr.operand)
            return stmts, ast.Not(span, value)
        temp = self.temp()
        left_stmts, left = self.lower(expr.left) if self.needs(expr.left) else ([], expr.left)
        right_stmts, right = self.lower(expr.right) if self.needs(expr.right) else ([], expr.right)
        here = before(span)
        guard = ast.Var(span, temp) if expr.op == "and" else ast.Not(span, ast.Var(span, temp))
        inner = ast.Block((*right_stmts, ast.Assign(here, temp, _truth(right), here)), here)
        return [*left_stmts, ast.Assign(here, temp, _truth(left), here),
                ast.If(here, ((guard, inner),), None)], ast.Var(span, temp)

    def function(self, stmt: ast.Def) -> ast.Def:
        # A function that is plain expressions is cheaper called inside one: its and/or stay
        # eager rather than give it a branch. One with blocks, or calling such a function (whose
        # call becomes a statement, run whatever the and/or), short-circuits.
        return super().function(stmt) if stmt.name in self.blocky else stmt


def _truth(value: ast.Expr) -> ast.Expr:
    """1.0 or 0.0, as and/or give; ``or`` also refuses a matrix operand with its own message."""
    return ast.BinOp(value.span, "or", value, ast.Number(value.span, 0.0))


def short_circuit(program: ast.Program, builtins: frozenset[str]) -> ast.Program:
    """``program`` with every ``and``/``or`` whose right side may fail evaluated lazily."""
    return _ShortCircuit(builtins, block_functions(program)).program(program)
