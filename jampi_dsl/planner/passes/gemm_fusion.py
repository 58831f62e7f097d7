"""GEMM fusion: ``alpha * (A @ B) + beta * C`` → one ``Gemm(A, B, C, alpha, beta)``.

Matched on ``X + Y`` and ``X - Y`` of two matrices where one side is a product
under constant scalings and negations (``A@B``, ``2 * (A@B)``, ``-(A@B)``,
``(A@B) / 2``) and the other side is any matrix under the same kind of
wrappers (``C``, ``0.5 * C``, ``-C``, ``C / 4``). So ``A@B + C``, ``C + A@B``,
``A@B - C``, ``C - A@B`` and ``alpha*(A@B) - beta*C`` all fuse; the left side
is tried as the product first.

Conditions, so the result is exactly what the unfused nodes compute:
- the product and every wrapper around it have no other use (else the product
  would be computed twice);
- alpha and beta are constants, nonzero (BLAS skips reading an operand whose
  factor is 0, which would hide a NaN or inf) and finite;
- each factor is exact: any negations and at most one scaling, a division only
  by a power of two (``2 * (3 * P)`` rounds twice; that is ``scalar_folding``'s call);
- the product and the addend have the same dtype, so the fused node's dtype and
  its float32/float64 arithmetic match the unfused result.
"""

from __future__ import annotations

import math
import sys

from ..graph import Program
from ..ir import Binary, Const, Gemm, MatMul, Node, Unary
from ._common import Rebuilder, Walk

NAME = "gemm_fusion"
_MAX_WRAPPERS = 8


def gemm_fusion(program: Program) -> Program:
    def fuse(original: Node, node: Node, rb: Rebuilder) -> Node:
        if not (isinstance(original, Binary) and original.operator in ("+", "-")):
            return node
        if not (original.a.type.is_matrix and original.b.type.is_matrix):
            return node
        if original.type.is_sparse:  # sparse + sparse stays sparse; GEMM writes a dense result
            return node
        sign = 1.0 if original.operator == "+" else -1.0
        for product_side, addend_side, product_sign, addend_sign in (
            (original.a, original.b, 1.0, sign),
            (original.b, original.a, sign, 1.0),
        ):
            product, alpha, wrappers = _peel(product_side)
            if not isinstance(product, MatMul) or alpha is None:
                continue
            if any(rb.uses.get(n.uid, 0) != 1 for n in (*wrappers, product)):
                continue
            addend, beta, _ = _peel(addend_side)
            if beta is None or addend.type.dtype != product.type.dtype or addend.type.shape != product.type.shape:
                continue  # a broadcast addend (a row, a column) stays an elementwise +
            alpha, beta = alpha * product_sign, beta * addend_sign
            m = rb.mapping
            return Gemm(
                m[product.a.uid], m[product.b.uid], m[addend.uid], alpha=alpha, beta=beta,
                trans_a=product.trans_a, trans_b=product.trans_b, span=original.span,
            )
        return node

    if not any(isinstance(n, MatMul) for n in Walk.of(program).nodes):
        return program
    return Rebuilder(program).run(fuse, NAME)


def _power_of_two(value: float) -> bool:
    return value != 0 and math.isfinite(value) and abs(math.frexp(value)[0]) == 0.5


def _peel(node: Node) -> tuple[Node, float | None, list[Node]]:
    """Strip constant scalings and negations off a matrix expression.

    Returns the base, its factor and the wrapper nodes stripped, outermost
    first. The factor is None unless it is exact: at most one wrapper scales by
    something other than ±1 (two would round twice, or overflow in between), a
    division only by a power of two (``x / 4`` is exactly ``0.25 * x``), and the
    result a nonzero normal float.
    """
    factor = 1.0
    scalings = 0
    wrappers: list[Node] = []
    for _ in range(_MAX_WRAPPERS):
        if isinstance(node, Unary) and node.operator == "neg":
            value, inner = -1.0, node.x
        elif isinstance(node, Binary) and node.operator == "*" and isinstance(node.a, Const) and node.b.type.is_matrix:
            value, inner = node.a.value, node.b
        elif isinstance(node, Binary) and node.operator == "*" and isinstance(node.b, Const) and node.a.type.is_matrix:
            value, inner = node.b.value, node.a
        elif (
            isinstance(node, Binary) and node.operator == "/" and isinstance(node.b, Const)
            and node.a.type.is_matrix and _power_of_two(node.b.value)
        ):
            value, inner = 1.0 / node.b.value, node.a
        else:
            break
        if abs(value) != 1.0:
            scalings += 1
        factor *= value
        wrappers.append(node)
        node = inner
    if scalings > 1 or factor == 0 or not math.isfinite(factor) or abs(factor) < sys.float_info.min:
        return node, None, wrappers
    return node, factor, wrappers
