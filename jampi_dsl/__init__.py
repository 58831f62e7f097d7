"""jampi: linear-algebra pipelines on Spark, from a small language or lazily from Python.

Imports are lazy: every Spark task imports this package (its executors live in
it), and the API's dependencies (lark, networkx, rich) would cost each Python
worker about 21 MiB and a second of start-up for nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Matrix": "api", "Scalar": "api", "Session": "api",
    "ExecutionError": "errors", "InputError": "errors", "JampiError": "errors", "ParseError": "errors",
    "PlanError": "errors", "ResolveError": "errors", "ShapeError": "errors",
}
__all__ = [*sorted(_EXPORTS), "session"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "session":
        # jampi_dsl.session is both the API entry point and the session module; the module is callable.
        return importlib.import_module(".session", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'jampi_dsl' has no attribute {name!r}")
