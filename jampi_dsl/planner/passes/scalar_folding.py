"""Scalar folding: constant arithmetic, identities and a canonical scaling form.

- Constants: ``2 * 3`` → ``6``, ``-(3)`` → ``-3``, ``abs``/``sqrt`` of a constant
  (both exact in IEEE arithmetic). Not folded: division by zero, results that
  overflow or lose precision to underflow, ``exp``/``log`` (their last bit may
  differ between libm and NumPy's own loops).
- Identities: ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` → ``x``;
  ``x * -1``, ``-1 * x``, ``x / -1`` → ``-x``; ``-(-x)`` → ``x``;
  ``x + (-y)`` → ``x - y``; ``x - (-y)`` → ``x + y``. (``0 * x`` is not ``0``:
  NaN and inf.)
- Scaling: ``X * a`` → ``a * X`` (a scalar goes on the left, a constant before
  another scalar); ``a * (b * X)`` → ``(a*b) * X``; ``-(a * X)`` and
  ``a * (-X)`` → ``(-a) * X``.

Never ``x / 3`` → ``x * (1/3)`` (it rounds differently). A rewrite that would
change a node's type is not made (float32 matrices stay float32).
"""

from __future__ import annotations

import math
import sys

from ... import ops
from ..ir import Binary, Const, Node, Unary
from ._common import Rebuilder, local_pass

NAME = "scalar_folding"
_MAX_STEPS = 8  # rules applied to one node before moving on (each step shrinks or canonicalises it)
_NESTED_FOLDS = 4  # how deep new inner nodes are folded (bounded: scalar chains can be long)


def _fold(node: Node, rb: Rebuilder, depth: int = _NESTED_FOLDS) -> Node:
    """Rewrite ``node`` until no rule applies. New inner nodes a rule makes
    (``-(a*X)`` → ``(-a)*X`` makes ``-a``) are folded too, ``depth`` levels down."""
    for _ in range(_MAX_STEPS):
        new = _step(node, rb, depth)
        if new is None or new.type != node.type:
            break
        node = new
        if rb.is_final(node):
            break  # an existing node (x*1 -> x) is already folded
    return node


scalar_folding = local_pass(NAME, lambda: _fold, rewrites=(Unary, Binary))


def _is(node: Node, value: float) -> bool:
    return isinstance(node, Const) and node.value == value


def _const(value: float | None, span) -> Const | None:
    """A folded constant, or None when the exact float result is not a plain finite number."""
    if value is None or not math.isfinite(value):
        return None
    if value != 0 and abs(value) < sys.float_info.min:
        return None  # subnormal: precision already lost, the unfolded form may keep it
    return Const(value, span=span)


def _arith(op: str, a: float, b: float) -> float | None:
    if op not in ("+", "-", "*", "/"):  # the other operations fold through their one kernel
        result = ops.apply(op, a, b)
        return result if math.isfinite(result) else None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        result = a * b
        return None if result == 0 and a != 0 and b != 0 else result  # underflow to zero
    if b == 0:
        return None
    result = a / b
    return None if result == 0 and a != 0 else result


def _negate(x: Node, span, rb: Rebuilder, depth: int) -> Node:
    if isinstance(x, Const):
        return Const(-x.value, span=span)
    if isinstance(x, Unary) and x.operator == "neg":
        return rb.adopt(x, x.x)
    new = Unary("neg", x, span=span)
    return _fold(new, rb, depth - 1) if depth > 0 else new


def _times(a: Node, b: Node, span, rb: Rebuilder, depth: int) -> Node | None:
    """The scalar a*b, folded when both are constants; None if that fold is unsafe."""
    if isinstance(a, Const) and isinstance(b, Const):
        return _const(_arith("*", a.value, b.value), span)
    if isinstance(b, Const):
        a, b = b, a  # the constant on the left
    new = Binary("*", a, b, span=span)
    return _fold(new, rb, depth - 1) if depth > 0 else new


def _step(node: Node, rb: Rebuilder, depth: int) -> Node | None:
    """One rewrite of ``node``, or None. A grandchild used directly is adopted
    (see :meth:`Rebuilder.adopt`)."""
    span = node.span
    if isinstance(node, Unary):
        x = node.x
        if node.operator == "neg":
            if isinstance(x, Const):
                return Const(-x.value, span=span)
            if isinstance(x, Unary) and x.operator == "neg":
                return rb.adopt(x, x.x)
            if isinstance(x, Binary) and x.operator == "*" and x.a.type.is_scalar:
                return Binary("*", _negate(x.a, x.a.span, rb, depth), rb.adopt(x, x.b), span=span)
            return None
        if isinstance(x, Const):
            if node.operator == "abs":
                return Const(abs(x.value), span=span)
            if node.operator == "sqrt" and x.value >= 0:
                return Const(math.sqrt(x.value), span=span)
        return None
    if not isinstance(node, Binary):
        return None
    op, a, b = node.operator, node.a, node.b
    if isinstance(a, Const) and isinstance(b, Const):
        return _const(_arith(op, a.value, b.value), span)
    if op == "*":
        if _is(b, 1):
            return a
        if _is(a, 1):
            return b
        if _is(b, -1):
            return _negate(a, span, rb, depth)
        if _is(a, -1):
            return _negate(b, span, rb, depth)
        if b.type.is_scalar and (a.type.is_matrix or (isinstance(b, Const) and not isinstance(a, Const))):
            return Binary("*", b, a, span=span)  # canonical: the scalar (the constant) on the left
        if a.type.is_scalar:
            if isinstance(b, Binary) and b.operator == "*" and b.a.type.is_scalar:
                scale = _times(a, b.a, span, rb, depth)
                return None if scale is None else Binary("*", scale, rb.adopt(b, b.b), span=span)
            if isinstance(b, Unary) and b.operator == "neg":
                return Binary("*", _negate(a, a.span, rb, depth), rb.adopt(b, b.x), span=span)
        return None
    if op == "/":
        if _is(b, 1):
            return a
        if _is(b, -1):
            return _negate(a, span, rb, depth)
        return None
    if op == "+":
        if _is(b, 0):
            return a
        if _is(a, 0):
            return b
        if isinstance(b, Unary) and b.operator == "neg":
            return Binary("-", a, rb.adopt(b, b.x), span=span)
        return None
    if op == "-":
        if _is(b, 0):
            return a
        if isinstance(b, Unary) and b.operator == "neg":
            return Binary("+", a, rb.adopt(b, b.x), span=span)
        return None
    return None
