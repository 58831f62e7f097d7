"""Transpose folding: never materialise a transpose that can be had for free.

- ``A.T.T`` → ``A``.
- A transpose feeding a product becomes the product's ``trans_a``/``trans_b``
  flag: ``A.T @ B`` → ``matmul(A, B, trans_a=True)``.
- ``(A @ B).T`` → ``B.T @ A.T``, i.e. ``matmul(B, A, trans_a=not tb, trans_b=not ta)``,
  when the product has no other use (otherwise it would be computed twice; a
  shared product keeps its transpose, which a consuming product still absorbs
  as a flag). ``Gemm`` likewise when its addend's transpose is free too.
- ``zeros(r, c).T`` → ``zeros(c, r)``, ``ones`` likewise, ``eye(n).T`` → ``eye(n)``.
- A transpose is pushed through elementwise operations with no other use
  (``(s * A).T`` → ``s * A.T``, ``(-A).T``, ``abs(A).T``, ``(A + B).T``) only
  when that makes it vanish entirely below them, e.g. ``(2 * (A @ B)).T`` →
  ``2 * (B.T @ A.T)``. ``(A + B).T`` with an ordinary ``A`` is left alone.

Every rewrite is exact: a transpose only moves data.
"""

from __future__ import annotations

from ..ir import Binary, Gemm, Generate, MatMul, Node, Transpose, Unary
from ._common import Rebuilder, local_pass

NAME = "transpose_folding"
PUSH_DEPTH = 4  # how many elementwise layers a transpose may be pushed through


def _fold(node: Node, rb: Rebuilder) -> Node:
    if isinstance(node, Transpose):
        taken: list[Node] = []
        free = _free_transpose(node.x, rb, PUSH_DEPTH, node, taken)
        if free is None:
            return node
        rb.consumed.update(n.uid for n in taken)
        return free
    if isinstance(node, (MatMul, Gemm)):
        changes = {}
        for child_name, flag_name in (("a", "trans_a"), ("b", "trans_b")):
            child = getattr(node, child_name)
            if isinstance(child, Transpose):
                changes[child_name] = rb.adopt(child, child.x)
                changes[flag_name] = not getattr(node, flag_name)
        return node.evolve(**changes) if changes else node
    return node


transpose_folding = local_pass(NAME, lambda: _fold, rewrites=(Transpose, MatMul, Gemm))


def _free_transpose(node: Node, rb: Rebuilder, depth: int, site: Node, taken: list[Node]) -> Node | None:
    """``node.T`` without a materialised transpose, or None if that is not possible.

    ``site`` is the transpose being removed; new nodes take its source span.
    Only nodes used by nothing else are restructured; they are added to ``taken``.
    """
    span = site.span
    if isinstance(node, Transpose):
        if rb.exclusive(node):
            taken.append(node)  # consumed if the whole push succeeds
        else:
            rb.retain(node.x)
        return node.x
    if isinstance(node, Generate):
        if node.kind == "eye" or (node.kind in ("zeros", "ones") and node.shape[0] == node.shape[1]):
            return rb.retain(node)
        if node.kind in ("zeros", "ones"):
            return Generate(node.kind, (node.shape[1], node.shape[0]), node.dtype, node.seed, span=node.span)
        return None
    if not rb.exclusive(node):
        return None
    taken.append(node)
    if isinstance(node, MatMul):
        return MatMul(node.b, node.a, trans_a=not node.trans_b, trans_b=not node.trans_a, span=span)
    if isinstance(node, Gemm):
        if depth <= 0:
            return None
        c_t = _free_transpose(node.c, rb, depth - 1, site, taken)
        if c_t is None:
            return None
        return Gemm(
            node.b, node.a, c_t, alpha=node.alpha, beta=node.beta,
            trans_a=not node.trans_b, trans_b=not node.trans_a, span=span,
        )
    if depth <= 0:
        return None
    if isinstance(node, Unary):
        inner = _free_transpose(node.x, rb, depth - 1, site, taken)
        return None if inner is None else Unary(node.operator, inner, span=span)
    if isinstance(node, Binary):
        operands = []
        for child in (node.a, node.b):
            if child.type.is_scalar:
                operands.append(child)
                continue
            moved = _free_transpose(child, rb, depth - 1, site, taken)
            if moved is None:
                return None
            operands.append(moved)
        return Binary(node.operator, operands[0], operands[1], span=span)
    return None
