"""The built-in functions' signatures (positional names, keywords with their defaults) and
the reserved words: what the builder checks a call against, before evaluating it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import ops
from . import ir
from .linalg import FUNCTIONS as LINALG


@dataclass(frozen=True)
class Signature:
    positional: tuple[str, ...]
    keywords: dict[str, Any]
    variadic: bool = False  # any number (at least one) of positional arguments: hcat(A, B, C)


_DTYPE_KW = {"dtype": None}
FUNCTIONS: dict[str, Signature] = {
    "load": Signature(("path",), {"format": None, "dtype": None, "shape": None, "finite": False, "form": None,
                                  "sparse": None}),
    "random": Signature(("r", "c"), {"seed": 0, "density": None, **_DTYPE_KW}),
    "randn": Signature(("r", "c"), {"seed": 0, "density": None, **_DTYPE_KW}),
    "zeros": Signature(("r", "c"), dict(_DTYPE_KW)),
    "ones": Signature(("r", "c"), dict(_DTYPE_KW)),
    "eye": Signature(("n",), dict(_DTYPE_KW)),
    **{name: Signature(("x",), {"axis": None}) for name in ir.AXIS_REDUCE_OPS},
    "trace": Signature(("x",), {}),
    "nnz": Signature(("x",), {}),
    "sparse": Signature(("x",), {}),
    "dense": Signature(("x",), {}),
    "norm": Signature(("x",), {}),
    "hcat": Signature((), {}, variadic=True),
    "vcat": Signature((), {}, variadic=True),
    "nrow": Signature(("x",), {}),
    "ncol": Signature(("x",), {}),
    # every elementwise function of jampi_dsl.ops, with its arity
    **{op.name: Signature(("x", "y", "z")[: op.arity] if op.arity < 3 else ("c", "a", "b"), {})
       for op in ops.FUNCTIONS.values()},
    # linear algebra (jampi_dsl.planner.linalg)
    **{f.name: Signature(("a", "b")[: f.inputs] if f.inputs == 2 else ("x",),
                         {"k": None, "oversample": None, "iters": None, "seed": None} if f.takes_k else {})
       for f in LINALG.values()},
    "save": Signature(("x", "path"), {"format": None, "form": None}),
    "print": Signature((), {}, variadic=True),
}
STATEMENT_FUNCTIONS = ("save", "print")
KEYWORDS = frozenset({"param", "true", "false", "and", "or", "not", "for", "in", "range", "while", "if", "else",
                      "def", "return", "break"})
RESERVED = frozenset(FUNCTIONS) | KEYWORDS
