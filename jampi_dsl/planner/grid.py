"""The arithmetic of a Cannon grid, shared by the planner (which fixes the grid of
every Cannon step) and the tasks (which place blocks by it). Pure integers: the
tasks import it, and nothing here may pull the planner's dependencies into them."""

from __future__ import annotations

import math


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def grid_fits(extent: int, q: int) -> bool:
    """A dimension of ``extent`` splits into exactly q non-empty blocks of ceil(extent/q)."""
    return extent >= 1 and cdiv(extent, cdiv(extent, q)) == q


def choose_grid(m: int, n: int, q_max: int) -> int:
    """The largest q ≤ q_max whose blocks of C are all non-empty (so C is a q×q grid)."""
    for q in range(max(1, q_max), 0, -1):
        if grid_fits(m, q) and grid_fits(n, q):
            return q
    return 1


def default_q(slots: int) -> int:
    """The side of the largest square grid ``slots`` tasks can run at once."""
    return max(1, math.isqrt(max(1, slots)))
