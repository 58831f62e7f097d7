"""Matrix-chain reordering: the classic O(k³) dynamic program over shapes.

A chain is a maximal tree of ``MatMul`` nodes whose inner products are used
once, by the next product up: a product with any other use (bound to a name
that is also printed, used twice, ...) is a boundary and stays computed as
written. Operands carry their transpose flags, and a product used transposed
contributes its operands reversed with flipped flags. The chain is rebuilt
with the cheapest parenthesisation (scalar multiply-adds m·k·n per product) if
that is strictly cheaper than the one written, so ``A @ B @ v`` (n×n, n×n,
n×1) becomes ``A @ (B @ v)`` while ``X.T @ (X @ v)`` stays.

A chain mixing float32 and float64 operands is left alone: reordering would
change which intermediate products are computed in float32. Chains longer than
``MAX_DP`` operands are planned greedily (cheapest adjacent pair first,
O(k log k)), which keeps a 10,000-product chain fast; the written order is kept
unless the plan is strictly cheaper.
"""

from __future__ import annotations

import heapq

from ..graph import Program
from ..ir import MatMul, Node
from ._common import Rebuilder, Walk

NAME = "matrix_chain"
MAX_DP = 32

Operand = tuple[Node, bool]  # (original node, transposed)
Tree = int | tuple  # an operand index, or (left tree, right tree)


def matrix_chain(program: Program) -> Program:
    walk = Walk.of(program)
    uses, nodes = walk.uses, walk.nodes
    interior: set[int] = set()
    for node in nodes:
        if isinstance(node, MatMul):
            for child in (node.a, node.b):
                if isinstance(child, MatMul) and uses.get(child.uid) == 1 and child.type.dtype == node.type.dtype:
                    interior.add(child.uid)
    plans: dict[int, tuple[list[Operand], Tree]] = {}
    for node in nodes:
        if isinstance(node, MatMul) and node.uid not in interior:
            planned = _plan_chain(node, interior)
            if planned is not None:
                plans[node.uid] = planned

    def rebuild(original: Node, node: Node, rb: Rebuilder) -> Node:
        planned = plans.get(original.uid)
        if planned is None:
            return node
        operands, tree = planned
        return _build(tree, [(rb.mapping[o.uid], t) for o, t in operands], original.span)

    if not plans:
        return program
    return Rebuilder(program).run(rebuild, NAME)


def _flatten(root: MatMul, interior: set[int]) -> tuple[list[Operand], int]:
    """The chain's operands left to right, and the cost of the products as written."""
    operands: list[Operand] = []
    cost = 0
    stack: list[Operand] = [(root, False)]
    while stack:
        node, transposed = stack.pop()
        if node is root or (isinstance(node, MatMul) and node.uid in interior):
            m, n = node.type.shape
            cost += m * node.inner * n
            left, right = (node.a, node.trans_a), (node.b, node.trans_b)
            if transposed:  # (L @ R).T = R.T @ L.T
                left, right = (node.b, not node.trans_b), (node.a, not node.trans_a)
            stack.append(right)
            stack.append(left)
        else:
            operands.append((node, transposed))
    return operands, cost


def _plan_chain(root: MatMul, interior: set[int]) -> tuple[list[Operand], Tree] | None:
    operands, written_cost = _flatten(root, interior)
    if len(operands) < 3:
        return None
    if len({node.type.dtype for node, _ in operands}) > 1:
        return None
    dims = [_shape(operands[0])[0]] + [_shape(op)[1] for op in operands]
    cost, tree = _plan(dims)
    if cost >= written_cost:
        return None
    return operands, tree


def _shape(operand: Operand) -> tuple[int, int]:
    node, transposed = operand
    r, c = node.type.shape
    return (c, r) if transposed else (r, c)


def _plan(dims: list[int]) -> tuple[int, Tree]:
    """A cheap parenthesisation of operands with shapes dims[i] × dims[i+1]: the
    optimal one up to ``MAX_DP`` operands, else the greedy one."""
    if len(dims) - 1 <= MAX_DP:
        return _dp(dims)
    return _greedy(dims)


def _dp(dims: list[int]) -> tuple[int, Tree]:
    k = len(dims) - 1
    cost = [[0] * k for _ in range(k)]
    split = [[0] * k for _ in range(k)]
    for length in range(2, k + 1):
        for i in range(k - length + 1):
            j = i + length - 1
            best, best_s = None, i
            outer = dims[i] * dims[j + 1]
            for s in range(i, j):
                c = cost[i][s] + cost[s + 1][j] + outer * dims[s + 1]
                if best is None or c < best:
                    best, best_s = c, s
            cost[i][j], split[i][j] = best, best_s

    def tree(i: int, j: int) -> Tree:
        if i == j:
            return i
        s = split[i][j]
        return (tree(i, s), tree(s + 1, j))

    return cost[0][k - 1], tree(0, k - 1)


def _greedy(dims: list[int]) -> tuple[int, Tree]:
    """Repeatedly multiply the adjacent pair that is cheapest now (O(k log k)).

    Not always optimal, but it finds the cases that matter in long chains
    (a vector or a thin matrix at either end is absorbed step by step)."""
    k = len(dims) - 1
    left = dims[:-1]  # segment i is a product with shape left[i] × right[i]
    right = dims[1:]
    trees: list[Tree] = list(range(k))
    nxt = list(range(1, k + 1))
    prev = list(range(-1, k - 1))
    alive = [True] * k
    heap = [(left[i] * right[i] * right[i + 1], i, i + 1) for i in range(k - 1)]
    heapq.heapify(heap)
    total = 0
    while heap:
        cost, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j] and nxt[i] == j and cost == left[i] * right[i] * right[j]):
            continue  # stale: a neighbour was merged since this pair was queued
        total += cost
        trees[i] = (trees[i], trees[j])
        right[i] = right[j]
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[i] < k:
            prev[nxt[i]] = i
            heapq.heappush(heap, (left[i] * right[i] * right[nxt[i]], i, nxt[i]))
        if prev[i] >= 0:
            p = prev[i]
            heapq.heappush(heap, (left[p] * right[p] * right[i], p, i))
    return total, trees[0]


def _build(tree: Tree, operands: list[tuple[Node, bool]], span) -> Node:
    """MatMul nodes for ``tree`` (iteratively: a greedy tree can be as deep as the
    chain is long); an operand keeps its flag, a product is used untransposed."""
    results: dict[int, tuple[Node, bool]] = {}
    stack: list[tuple[Tree, bool]] = [(tree, False)]
    while stack:
        t, expanded = stack.pop()
        if isinstance(t, int):
            continue
        if not expanded:
            stack.append((t, True))
            stack.append((t[1], False))
            stack.append((t[0], False))
            continue
        (a, ta), (b, tb) = _result(results, t[0], operands), _result(results, t[1], operands)
        results[id(t)] = (MatMul(a, b, trans_a=ta, trans_b=tb, span=span), False)
    return _result(results, tree, operands)[0]


def _result(results: dict[int, tuple[Node, bool]], t: Tree, operands) -> tuple[Node, bool]:
    return operands[t] if isinstance(t, int) else results[id(t)]
