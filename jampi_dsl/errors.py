"""One error root, one subclass per stage of the pipeline.

Every error a user can cause carries an optional :class:`Span`; rendering it
gives ``file:line:col: message``, the source line and a caret under the span,
the way compilers do, so a mistake is found without reading a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class Source:
    """The text a span points into (a program file, or a ``--set`` argument)."""

    name: str
    text: str = field(repr=False)

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 0 < number <= len(lines) else ""


class Span(NamedTuple):
    """A 1-based line/column range in a :class:`Source`. Columns are inclusive-exclusive.

    A named tuple rather than a frozen dataclass: the parser makes one per node, and
    tuple construction is several times cheaper (it shows in the 10,000-statement benchmark)."""

    source: Source
    line: int
    column: int
    end_line: int
    end_column: int

    def location(self) -> str:
        return f"{self.source.name}:{self.line}:{self.column}"

    def caret_block(self) -> str:
        text = self.source.line(self.line)
        if not text and self.line > len(self.source.text.splitlines()):
            return ""
        width = (self.end_column - self.column) if self.end_line == self.line else len(text) - self.column + 1
        width = max(1, width)
        # Tabs keep their width so the caret lines up under the offending text.
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: self.column - 1])
        return f"    {text}\n    {pad}{'^' * width}"


class JampiError(Exception):
    """Root of every error jampi raises on purpose. ``exit_code`` follows the CLI contract."""

    exit_code = 2
    stage = "error"

    def __init__(self, message: str, span: Span | None = None, *, node: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.node = node

    def render(self) -> str:
        head = f"{self.stage}: {self.message}"
        if self.node:
            head = f"{head} (plan node {self.node})"
        if self.span is None:
            return head
        block = self.span.caret_block()
        return f"{self.span.location()}: {head}" + (f"\n{block}" if block else "")

    def __str__(self) -> str:
        return self.render()


class ParseError(JampiError):
    """The text is not a valid program (syntax)."""

    stage = "syntax error"


class ResolveError(JampiError):
    """Names: unknown variable or function, wrong arguments, bad parameters."""

    stage = "name error"


class ArgumentError(ResolveError):
    """A call's or a parameter's arguments: how many, which keywords, what values."""

    stage = "argument error"


class ShapeError(JampiError):
    """Shapes or dtypes do not fit together."""

    stage = "shape error"


class InputError(JampiError):
    """An input file is missing, unreadable or malformed."""

    stage = "input error"


class PlanError(JampiError):
    """No method can run a node within the resources (decided before any job runs)."""

    stage = "plan error"


class ExecutionError(JampiError):
    """Something failed while running; names the plan node that failed."""

    exit_code = 1
    stage = "execution error"
