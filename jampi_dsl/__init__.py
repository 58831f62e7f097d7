"""jampi: linear-algebra pipelines on Spark, from a small language or lazily from Python."""

from .api import Matrix, Scalar, Session, session  # noqa: I001
from .errors import (
    ExecutionError,
    InputError,
    JampiError,
    ParseError,
    PlanError,
    ResolveError,
    ShapeError,
)

__all__ = [
    "ExecutionError", "InputError", "JampiError", "Matrix", "ParseError", "PlanError", "ResolveError",
    "Scalar", "Session", "ShapeError", "session",
]
__version__ = "0.1.0"
