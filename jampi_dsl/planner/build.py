"""AST → typed IR: resolves names and parameters, reads file headers, checks
every shape. Anything wrong here is reported before a single job runs."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, ResolveError, Source, Span
from ..gcpause import paused_gc
from ..grammar import ast
from ..grammar.ast import source_text
from . import ir
from .graph import Program
from .inputs import inspect_input
from .outputs import output_format


@dataclass(frozen=True)
class StrVal:
    value: str
    base_dir: str  # relative paths resolve against this (the .lin file's folder, or the cwd)
    span: Span | None = None


@dataclass(frozen=True)
class BoolVal:
    value: bool
    span: Span | None = None


@dataclass(frozen=True)
class TupleVal:
    items: tuple[Any, ...]
    span: Span | None = None


@dataclass(frozen=True)
class ParamValue:
    """A parameter value given from outside the program (``--set`` or ``params=``)."""

    value: Any  # float, str or bool
    span: Span | None = None


@dataclass(frozen=True)
class Signature:
    positional: tuple[str, ...]
    keywords: dict[str, Any]


_DTYPE_KW = {"dtype": None}
FUNCTIONS: dict[str, Signature] = {
    "load": Signature(("path",), {"format": None, "dtype": None, "shape": None, "finite": False, "form": None}),
    "random": Signature(("r", "c"), {"seed": 0, **_DTYPE_KW}),
    "randn": Signature(("r", "c"), {"seed": 0, **_DTYPE_KW}),
    "zeros": Signature(("r", "c"), dict(_DTYPE_KW)),
    "ones": Signature(("r", "c"), dict(_DTYPE_KW)),
    "eye": Signature(("n",), dict(_DTYPE_KW)),
    "sum": Signature(("x",), {}),
    "trace": Signature(("x",), {}),
    "norm": Signature(("x",), {}),
    "abs": Signature(("x",), {}),
    "sqrt": Signature(("x",), {}),
    "exp": Signature(("x",), {}),
    "log": Signature(("x",), {}),
    "save": Signature(("x", "path"), {"format": None, "form": None}),
    "print": Signature(("x",), {}),
}
STATEMENT_FUNCTIONS = ("save", "print")
RESERVED = frozenset(FUNCTIONS) | {"param", "true", "false"}


def parse_param_override(text: str) -> tuple[str, ParamValue]:
    """``NAME=VALUE`` from the command line; the value is a number, true/false, or a string."""
    source = Source("--set", text)
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ResolveError("--set needs NAME=VALUE", Span(source, 1, 1, 1, len(text) + 1))
    span = Span(source, 1, 1, 1, len(name) + 1)
    raw = raw.strip()
    value: Any
    if raw in ("true", "false"):
        value = raw == "true"
    else:
        try:
            value = float(raw)
        except ValueError:
            value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" else raw
    return name, ParamValue(value, span)


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Builder:
    def __init__(self, program: ast.Program, overrides: dict[str, ParamValue], base_dir: str):
        self.ast = program
        self.base_dir = base_dir
        self.overrides = dict(overrides)
        self.env: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.outputs: list[ir.Node] = []
        self.bindings: list[tuple[str, ir.Node]] = []
        self.saved: dict[str, ir.Node] = {}  # path -> the value this program saves there

    # ------------------------------------------------------------ statements

    def build(self) -> Program:
        declared = {s.name for s in self.ast.statements if isinstance(s, ast.Param)}
        for name, value in self.overrides.items():
            if name not in declared:
                hint = _suggest(name, declared)
                raise ResolveError(f"--set {name}: the program declares no parameter {name!r}{hint}", value.span)
        for stmt in self.ast.statements:
            if isinstance(stmt, ast.Param):
                self._param(stmt)
            elif isinstance(stmt, ast.Assign):
                self._assign(stmt)
            else:
                self._expr_statement(stmt)
        return Program(
            outputs=tuple(self.outputs),
            bindings=tuple(self.bindings),
            params=tuple(self.params.items()),
            source_name=self.ast.source.name,
        )

    def _check_bindable(self, name: str, span: Span) -> None:
        if name in RESERVED:
            raise ResolveError(f"{name!r} is reserved (a function name or keyword) and cannot be assigned", span)

    def _param(self, stmt: ast.Param) -> None:
        self._check_bindable(stmt.name, stmt.name_span)
        if stmt.name in self.params:
            raise ResolveError(f"parameter {stmt.name!r} is declared twice", stmt.name_span)
        if stmt.name in self.env:
            raise ResolveError(f"parameter {stmt.name!r} is declared after {stmt.name!r} was assigned", stmt.name_span)
        override = self.overrides.get(stmt.name)
        if override is not None:
            value, span = override.value, override.span or stmt.span
            base = os.getcwd()  # a path given on the command line is relative to where it was typed
        else:
            literal = stmt.value
            value, span, base = literal.value, literal.span, self.base_dir
        self.params[stmt.name] = value
        if isinstance(value, bool):
            self.env[stmt.name] = BoolVal(value, span)
        elif isinstance(value, str):
            self.env[stmt.name] = StrVal(value, base, span)
        else:
            self.env[stmt.name] = ir.Const(float(value), span=span)

    def _assign(self, stmt: ast.Assign) -> None:
        self._check_bindable(stmt.name, stmt.name_span)
        if stmt.name in self.params:
            raise ResolveError(f"{stmt.name!r} is a parameter and cannot be reassigned", stmt.name_span)
        value = self.expr(stmt.value)
        self.env[stmt.name] = value
        if isinstance(value, ir.Node):
            self.bindings.append((stmt.name, value))

    def _expr_statement(self, stmt: ast.ExprStmt) -> None:
        expr = stmt.expr
        if not (isinstance(expr, ast.Call) and expr.name in STATEMENT_FUNCTIONS):
            raise ResolveError("this value is not used: assign it (X = ...) or print(...) it", expr.span)
        args = self._bind_args(expr)
        x = self._matrix_or_scalar(args["x"], expr.args[0].span if expr.args else expr.span)
        if expr.name == "print":
            self.outputs.append(ir.Print(x, source_text(expr.args[0]) if expr.args else "x", span=expr.span))
            return
        path = self._path(args["path"], "save")
        fmt = output_format(path, self._opt_str(args["format"]), args["path"].span,
                            protected=(self.base_dir, os.getcwd()))
        if path in self.saved:
            raise InputError(f"{path} is saved twice", args["path"].span)
        self.saved[path] = x
        options = tuple((k, self._opt_str(args[k])) for k in ("form",) if args[k] is not None)
        self.outputs.append(ir.Save(x, path, fmt, options, span=expr.span))

    # ------------------------------------------------------------ expressions

    def expr(self, node: ast.Expr) -> Any:
        handler = _HANDLERS.get(type(node))
        if handler is None:  # first sight of this AST class: one attribute lookup, then a dict hit
            handler = _HANDLERS[type(node)] = getattr(Builder, f"_e_{type(node).__name__}")
        return handler(self, node)

    def _e_Number(self, node: ast.Number):
        return ir.Const(node.value, span=node.span)

    def _e_String(self, node: ast.String):
        return StrVal(node.value, self.base_dir, node.span)

    def _e_Bool(self, node: ast.Bool):
        return BoolVal(node.value, node.span)

    def _e_TupleLit(self, node: ast.TupleLit):
        return TupleVal(tuple(self.expr(i) for i in node.items), node.span)

    def _e_Var(self, node: ast.Var):
        if node.name in self.env:
            value = self.env[node.name]
            if isinstance(value, ir.Const) and node.name in self.params:
                return ir.Const(value.value, span=node.span)  # errors about a parameter point at its use
            if isinstance(value, ir.Node):
                return value
            # Re-anchor literals so errors point at this use, not the declaration.
            return type(value)(*[getattr(value, f) for f in value.__dataclass_fields__ if f != "span"], node.span)
        if node.name in FUNCTIONS:
            raise ResolveError(f"{node.name!r} is a function; call it as {node.name}(...)", node.span)
        hint = _suggest(node.name, self.env)
        raise ResolveError(f"unknown name {node.name!r}{hint}", node.span)

    def _e_Neg(self, node: ast.Neg):
        x = self._matrix_or_scalar(self.expr(node.operand), node.operand.span)
        return ir.Unary("neg", x, span=node.span)

    def _e_Transpose(self, node: ast.Transpose):
        x = self._matrix_or_scalar(self.expr(node.operand), node.operand.span)
        return x if x.type.is_scalar else ir.Transpose(x, span=node.span)

    def _e_BinOp(self, node: ast.BinOp):
        a = self._matrix_or_scalar(self.expr(node.left), node.left.span)
        b = self._matrix_or_scalar(self.expr(node.right), node.right.span)
        if node.op == "@":
            return ir.MatMul(a, b, span=node.span)
        return ir.Binary(node.op, a, b, span=node.span)

    def _e_Call(self, node: ast.Call):
        if node.name in STATEMENT_FUNCTIONS:
            raise ResolveError(f"{node.name}() is a statement and gives no value", node.name_span)
        args = self._bind_args(node)
        name = node.name
        if name in ("random", "randn", "zeros", "ones", "eye"):
            if name == "eye":
                n = self._size(args["n"])
                shape = (n, n)
            else:
                shape = (self._size(args["r"]), self._size(args["c"]))
            kind = {"random": "uniform", "randn": "normal"}.get(name, name)
            seed = self._whole(args["seed"], "seed", minimum=0) if "seed" in args else 0
            return ir.Generate(kind, shape, self._dtype(args["dtype"]) or "float64", seed, span=node.span)
        if name == "load":
            return self._load(node, args)
        x = self._matrix_or_scalar(args["x"], node.args[0].span)
        if name in ir.REDUCE_OPS:
            return ir.Reduce(name, x, span=node.span)
        return ir.Unary(name, x, span=node.span)

    # ------------------------------------------------------------ helpers

    def _bind_args(self, call: ast.Call) -> dict[str, Any]:
        if call.name not in FUNCTIONS:
            raise ResolveError(f"unknown function {call.name!r}{_suggest(call.name, FUNCTIONS)}", call.name_span)
        sig = FUNCTIONS[call.name]
        if len(call.args) > len(sig.positional) or (
            len(call.args) < len(sig.positional)
            and not all(p in {k.name for k in call.keywords} for p in sig.positional[len(call.args) :])
        ):
            want = ", ".join(sig.positional)
            raise ResolveError(
                f"{call.name}() takes {len(sig.positional)} argument{'s' * (len(sig.positional) != 1)} "
                f"({want}), got {len(call.args)}",
                call.span,
            )
        bound: dict[str, Any] = {}
        for name, arg in zip(sig.positional, call.args, strict=False):
            bound[name] = self.expr(arg)
        for kw in call.keywords:
            if kw.name not in sig.keywords and kw.name not in sig.positional:
                allowed = ", ".join(sig.keywords) or "none"
                raise ResolveError(f"{call.name}() has no argument {kw.name!r} (keywords: {allowed})", kw.span)
            if kw.name in bound:
                raise ResolveError(f"{call.name}() got {kw.name!r} twice", kw.span)
            bound[kw.name] = self.expr(kw.value)
        for name, default in sig.keywords.items():
            bound.setdefault(name, default)
        return bound

    def _matrix_or_scalar(self, value: Any, span: Span) -> ir.Node:
        if isinstance(value, ir.Node):
            return value
        what = {StrVal: "a string", BoolVal: "true/false", TupleVal: "a tuple"}.get(type(value), "this")
        raise ResolveError(f"expected a matrix or a number here, got {what}", getattr(value, "span", None) or span)

    def _static_number(self, value: Any) -> float | None:
        """The value of a scalar expression built only from numbers and parameters."""
        if isinstance(value, ir.Const):
            return value.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)  # a signature default
        if isinstance(value, ir.Unary) and value.operator == "neg":
            inner = self._static_number(value.x)
            return None if inner is None else -inner
        if isinstance(value, ir.Binary):
            a, b = self._static_number(value.a), self._static_number(value.b)
            if a is None or b is None or (value.operator == "/" and b == 0):
                return None
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[value.operator]
        return None

    def _whole(self, value: Any, what: str, minimum: int) -> int:
        number = self._static_number(value)
        span = getattr(value, "span", None)
        if number is None:
            raise ResolveError(f"{what} must be a number known before the run (a literal or a parameter)", span)
        if number != int(number):
            raise ResolveError(f"{what} must be a whole number, got {number:g}", span)
        if number < minimum:
            raise ResolveError(f"{what} must be at least {minimum}, got {number:g}", span)
        return int(number)

    def _size(self, value: Any) -> int:
        return self._whole(value, "a matrix size", minimum=1)

    def _opt_str(self, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, StrVal):
            return value.value
        raise ResolveError("expected a string here", getattr(value, "span", None))

    def _dtype(self, value: Any) -> str | None:
        text = self._opt_str(value)
        if text is not None and text not in ir.FLOAT_DTYPES:
            raise ResolveError(f"dtype must be \"float64\" or \"float32\", got {text!r}", value.span)
        return text

    def _path(self, value: Any, what: str) -> str:
        if not isinstance(value, StrVal):
            raise ResolveError(f"{what}() needs a path string", getattr(value, "span", None))
        return str((Path(value.base_dir) / os.path.expanduser(value.value)).resolve())

    def _load(self, node: ast.Call, args: dict[str, Any]) -> ir.Node:
        path = self._path(args["path"], "load")
        if path in self.saved:
            return self._load_saved(path, args)
        shape = None
        if args["shape"] is not None:
            tup = args["shape"]
            if not isinstance(tup, TupleVal) or len(tup.items) != 2:
                raise ResolveError("shape must be a pair (rows, cols)", getattr(tup, "span", None))
            shape = (self._size(tup.items[0]), self._size(tup.items[1]))
        finite = args["finite"]
        if not isinstance(finite, (bool, BoolVal)):
            raise ResolveError("finite must be true or false", getattr(finite, "span", None))
        info = inspect_input(
            path,
            self._opt_str(args["format"]),
            shape=shape,
            form=self._opt_str(args["form"]),
            span=args["path"].span,
        )
        dtype = self._dtype(args["dtype"]) or info.dtype
        options = tuple(sorted({**info.options, "finite": bool(getattr(finite, "value", finite))}.items()))
        return ir.Load(path, info.format, info.shape, dtype, options, span=node.span)


    def _load_saved(self, path: str, args: dict[str, Any]) -> ir.Node:
        """A load of a file this program saved earlier is that value: the file on disk is the
        previous run's until the run commits, and reading it would be silently stale."""
        value = self.saved[path]
        span = args["path"].span
        if value.type.is_scalar:
            raise InputError(f"{path} is saved above as a scalar", span)
        dtype = self._dtype(args["dtype"])
        if dtype not in (None, value.type.dtype):
            raise InputError(f"{path} is saved above as {value.type.dtype}; load it without dtype= "
                             f"or save a {dtype} value", span)
        shape = args["shape"]
        if isinstance(shape, TupleVal) and len(shape.items) == 2:
            wanted = (self._size(shape.items[0]), self._size(shape.items[1]))
            if wanted != value.type.shape:
                raise InputError(f"shape={wanted} but {path} is saved above as {value.type.shape}", span)
        return value


_HANDLERS: dict[type, Any] = {}  # AST class -> Builder._e_<class>


def build(
    program: ast.Program,
    overrides: dict[str, ParamValue] | None = None,
    base_dir: str | None = None,
) -> Program:
    if base_dir is None:
        name = program.source.name
        base_dir = str(Path(name).parent.resolve()) if not name.startswith("<") else os.getcwd()
    with paused_gc():
        return Builder(program, overrides or {}, base_dir).build()
