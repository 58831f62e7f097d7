"""Pause the cyclic garbage collector while the front half builds big acyclic structures.

Parsing, building and rewriting a large program allocate hundreds of thousands
of tokens, AST and IR nodes, none in reference cycles (reference counting frees
them). Each allocation burst triggers collections that rescan every live node
of the growing DAG, which cost as much as the work itself on a 10,000-statement
program. Nesting is fine: only the outermost pause re-enables the collector.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
