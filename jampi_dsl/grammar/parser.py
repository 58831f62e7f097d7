"""Text → AST, with lark's LALR parser. Every lark failure becomes a ParseError
with a caret; nothing else escapes (see the fuzz test)."""

from __future__ import annotations

import ast as pyast
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from ..errors import JampiError, ParseError, Source, Span
from . import ast

_GRAMMAR = Path(__file__).with_name("lin.lark")

# Terminal names lark reports, spelled the way a user typed them.
_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "end of line",
    "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'",
    "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "TRANSPOSE": "'.T'", "PARAM": "'param'",
    "TRUE": "'true'", "FALSE": "'false'", "$END": "end of input",
}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(
        _GRAMMAR.read_text(),
        start="program",
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _span(source: Source, meta) -> Span:
    return Span(source, meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(source: Source, token: Token) -> Span:
    return Span(source, token.line, token.column, token.end_line, token.end_column)


def _unquote(text: str) -> str:
    return pyast.literal_eval(text)


def _binary(op: str):
    def build(self, meta, children):
        return ast.BinOp(self._s(meta), op, children[0], children[1])

    return build


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _s(self, meta) -> Span:
        return _span(self.source, meta)

    # statements
    def program(self, meta, children):
        return tuple(c for c in children if isinstance(c, ast.Stmt))

    def param(self, meta, children):
        name, value = children
        return ast.Param(self._s(meta), str(name), value, _token_span(self.source, name))

    def assign(self, meta, children):
        name, value = children
        return ast.Assign(self._s(meta), str(name), value, _token_span(self.source, name))

    def expr_stmt(self, meta, children):
        return ast.ExprStmt(self._s(meta), children[0])

    # literals
    def number(self, meta, children):
        return ast.Number(self._s(meta), float(children[0]))

    def neg_number(self, meta, children):
        return ast.Number(self._s(meta), -float(children[0]))

    def string(self, meta, children):
        return ast.String(self._s(meta), _unquote(str(children[0])))

    def true(self, meta, children):
        return ast.Bool(self._s(meta), True)

    def false(self, meta, children):
        return ast.Bool(self._s(meta), False)

    def var(self, meta, children):
        return ast.Var(self._s(meta), str(children[0]))

    def tuple(self, meta, children):
        return ast.TupleLit(self._s(meta), tuple(children))

    # operators
    add, sub, mul, div, matmul = (_binary(o) for o in "+-*/@")

    def neg(self, meta, children):
        return ast.Neg(self._s(meta), children[0])

    def transpose(self, meta, children):
        return ast.Transpose(self._s(meta), children[0])

    # calls
    def call(self, meta, children):
        name, arguments = children
        args, keywords = [], []
        for arg in arguments or ():
            if isinstance(arg, ast.Keyword):
                keywords.append(arg)
            elif keywords:
                raise ParseError("positional argument after a keyword argument", arg.span)
            else:
                args.append(arg)
        return ast.Call(self._s(meta), str(name), tuple(args), tuple(keywords), _token_span(self.source, name))

    def arguments(self, meta, children):
        return [c for c in children if c is not None]

    def keyword(self, meta, children):
        name, value = children
        return ast.Keyword(str(name), value, self._s(meta))


def _describe_expected(expected) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t.lower()) for t in expected if not t.startswith("__")})
    if not words:
        return ""
    if len(words) > 6:
        return ""
    return "; expected " + ", ".join(words)


def _parse_error(source: Source, err: UnexpectedInput) -> ParseError:
    line = getattr(err, "line", None) or 1
    column = getattr(err, "column", None) or 1
    if isinstance(err, UnexpectedCharacters):
        char = source.line(line)[column - 1 : column] or "?"
        message = f"unexpected character {char!r}"
    elif isinstance(err, UnexpectedToken):
        token = err.token
        if token.type == "$END":
            lines = source.text.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
            message = "unexpected end of input"
        elif token.type == "_NL":
            message = "unexpected end of line"
        else:
            message = f"unexpected {_TOKEN_WORDS.get(token.type, repr(str(token)))}"
            if token.type in ("NAME", "NUMBER", "STRING"):
                message = f"unexpected {token.type.lower()} {str(token)!r}"
        message += _describe_expected(err.expected)
    elif isinstance(err, UnexpectedEOF):
        lines = source.text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        message = "unexpected end of input"
    else:  # pragma: no cover - lark has no other UnexpectedInput kinds today
        message = str(err).splitlines()[0]
    return ParseError(message, Span(source, line, column, line, column + 1))


def parse(text: str, name: str = "<string>") -> ast.Program:
    """Parse program text. Raises ParseError (a JampiError) on any syntax problem."""
    source = Source(name, text)
    # The grammar ends every statement with a newline; a last line without one is still a statement.
    body = text if text.endswith("\n") else text + "\n"
    try:
        tree = _lark().parse(body)
        statements = _ToAst(source).transform(tree)
    except UnexpectedInput as err:
        raise _parse_error(source, err) from None
    except VisitError as err:  # lark wraps errors raised inside transformer callbacks
        if isinstance(err.orig_exc, JampiError):
            raise err.orig_exc from None
        raise ParseError(f"internal parser error: {err.orig_exc}") from err.orig_exc
    except LarkError as err:  # pragma: no cover - defensive: never let a raw lark error escape
        raise ParseError(str(err).splitlines()[0]) from None
    return ast.Program(statements, source)


def parse_file(path: str | Path) -> ast.Program:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        from ..errors import InputError

        raise InputError(f"program file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        from ..errors import InputError

        raise InputError(f"cannot read program file {path}: {err}") from None
    return parse(text, str(path))
