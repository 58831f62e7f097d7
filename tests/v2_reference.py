"""A reference evaluator for version 2 of the .lin language (LANGUAGE.md), written
independently from jampi's planner, builder and executors.

It walks the syntax tree of ``jampi_dsl.grammar.parser.parse`` statement by statement,
the way a NumPy user would run the program by hand: a flat environment of Python floats
(scalars) and 2-D float64 arrays (matrices), loops and branches executed directly,
user functions instantiated per call with their own local names, slice assignment
making a copy. Only the generators of ``jampi_dsl.executors.blockgen`` are shared, so
that ``randn``/``random`` give the same numbers.

What it does not know (``load``, ``save``, factorisations, sparse storage, float32)
raises :class:`Unsupported`; a program that is wrong under the contract (unknown name,
bad shape, index out of range, break outside a loop...) raises :class:`RefError`.

It also watches for *fragile* programs: a comparison decided by a margin at the level
of rounding (two computed values within ~1e-7 of each other), where a different but
equally correct summation order in jampi could take the other branch. The tests skip
those rather than report a false discrepancy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jampi_dsl.executors.blockgen import generate
from jampi_dsl.grammar import ast
from jampi_dsl.grammar.parser import parse

Value = Any  # float (scalar), str (a string literal or param) or a 2-D float64 np.ndarray (matrix)

MAX_ITERATIONS = 100_000  # over all loops of one run: a runaway loop is a bug in the program's generator
FRAGILE_RTOL = 1e-7
FRAGILE_FLOOR = 1e-3  # values near 0 are compared on this scale: rounding noise is absolute


class RefError(Exception):
    """The program is wrong under the contract (the reference would refuse to run it)."""


class Unsupported(Exception):
    """A construct this reference evaluator does not implement."""


class _Break(Exception):
    pass


@dataclass
class Outcome:
    prints: list[tuple[str, Value]] = field(default_factory=list)
    fragile: list[str] = field(default_factory=list)  # near-tie decisions, with where they happened

    def values(self) -> dict[str, Value]:
        return dict(self.prints)


def text_of(node) -> str:
    """The source text of a node, from its span (the label a single-argument print gets)."""
    span = node.span
    lines = span.source.text.splitlines()
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1 : span.end_column - 1]
    parts = lines[span.line - 1 : span.end_line]
    parts[0] = parts[0][span.column - 1 :]
    parts[-1] = parts[-1][: span.end_column - 1]
    return " ".join(p.strip() for p in parts)


def _is_matrix(v: Value) -> bool:
    return isinstance(v, np.ndarray)


def _is_scalar(v: Value) -> bool:
    return isinstance(v, float)


def _scalar(v: Value, what: str) -> float:
    if not _is_scalar(v):
        raise RefError(f"{what} must be a scalar, got {_describe(v)}")
    return v


def _matrix(v: Value, what: str) -> np.ndarray:
    if not _is_matrix(v):
        raise RefError(f"{what} must be a matrix, got {_describe(v)}")
    return v


def _describe(v: Value) -> str:
    if _is_matrix(v):
        return f"a {v.shape[0]}x{v.shape[1]} matrix"
    return f"the {type(v).__name__} {v!r}"


def _whole(v: Value, what: str) -> int:
    x = _scalar(v, what)
    if not math.isfinite(x) or x != int(x):
        raise RefError(f"{what} must be a whole number, got {x!r}")
    return int(x)


def _numeric(fn, *args: Value) -> Value:
    """An elementwise NumPy kernel on scalars and matrices with 2-D NumPy broadcasting;
    IEEE results (inf, nan) never raise; all-scalar arguments give a Python float."""
    for a in args:
        if not (_is_matrix(a) or _is_scalar(a)):
            raise RefError(f"an elementwise operand must be a number, got {_describe(a)}")
    shapes = [a.shape for a in args if _is_matrix(a)]
    if shapes:
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            raise RefError(f"shapes {shapes} do not broadcast") from None
    with np.errstate(all="ignore"):
        out = fn(*(np.float64(a) if _is_scalar(a) else a for a in args))
    if not shapes:
        return float(out)
    return np.asarray(out, dtype=np.float64)


class Evaluator:
    def __init__(self, program: ast.Program, params: dict[str, Value] | None = None):
        self.program = program
        self.overrides = dict(params or {})
        self.functions: dict[str, ast.Def] = {}
        self.outcome = Outcome()
        self.calls = 0
        self.iterations = 0
        self.loop_depth = 0
        self.active: list[str] = []  # user functions being called (no recursion)
        self.params: dict[str, Value] = {}  # parameters are constants, seen inside functions too

    # ---- statements -------------------------------------------------------------------

    def run(self) -> Outcome:
        env: dict[str, Value] = {}
        self.block(self.program.statements, env, top=True)
        return self.outcome

    def block(self, statements, env: dict[str, Value], top: bool = False) -> None:
        for stmt in statements:
            self.statement(stmt, env, top)

    def statement(self, stmt: ast.Stmt, env: dict[str, Value], top: bool) -> None:
        if isinstance(stmt, ast.Param):
            if not top:
                raise RefError("param inside a block")
            value = self.overrides.get(stmt.name, self.literal(stmt.value))
            env[stmt.name] = self.params[stmt.name] = value
        elif isinstance(stmt, ast.Assign):
            env[stmt.name] = self.expr(stmt.value, env)
        elif isinstance(stmt, ast.MultiAssign):
            values = self.multi(stmt.value, env)
            if len(values) != len(stmt.names):
                raise RefError(f"{len(stmt.names)} names on the left, {len(values)} values")
            if len(set(stmt.names)) != len(stmt.names):
                raise RefError("a name twice on the left")
            for name, value in zip(stmt.names, values, strict=True):
                env[name] = value
        elif isinstance(stmt, ast.SliceAssign):
            self.slice_assign(stmt, env)
        elif isinstance(stmt, ast.ExprStmt):
            self.expr_statement(stmt.expr, env)
        elif isinstance(stmt, ast.For):
            self.for_loop(stmt, env)
        elif isinstance(stmt, ast.While):
            self.loop_depth += 1
            try:
                while self.truth(self.expr(stmt.cond, env), "a while condition"):
                    self.tick()
                    self.block(stmt.body.statements, env)
            except _Break:
                pass
            finally:
                self.loop_depth -= 1
        elif isinstance(stmt, ast.If):
            for cond, body in stmt.cases:
                if self.truth(self.expr(cond, env), "an if condition"):
                    self.block(body.statements, env)
                    break
            else:
                if stmt.orelse is not None:
                    self.block(stmt.orelse.statements, env)
        elif isinstance(stmt, ast.Def):
            if not top:
                raise RefError("def inside a block")
            if stmt.name in self.functions:
                raise RefError(f"function {stmt.name} defined twice")
            self.functions[stmt.name] = stmt
        elif isinstance(stmt, ast.Break):
            if self.loop_depth == 0:
                raise RefError("break outside a loop")
            raise _Break
        elif isinstance(stmt, ast.Return):
            raise RefError("return outside a function, or not its last statement")
        else:  # pragma: no cover - a new statement kind
            raise Unsupported(type(stmt).__name__)

    def for_loop(self, stmt: ast.For, env: dict[str, Value]) -> None:
        call = stmt.range_call
        if call.name != "range" or call.keywords:
            raise RefError("for needs range(...)")
        bounds = [float(_whole(self.expr(a, env), "a range bound")) for a in call.args]  # like Python's range
        if len(bounds) == 1:
            start, stop, step = 0.0, bounds[0], 1.0
        elif len(bounds) == 2:
            start, stop, step = bounds[0], bounds[1], 1.0
        elif len(bounds) == 3:
            start, stop, step = bounds
        else:
            raise RefError("range takes 1 to 3 arguments")
        if step == 0:
            raise RefError("range step is 0")
        count = max(0, math.ceil((stop - start) / step))
        self.loop_depth += 1
        try:
            for k in range(count):
                self.tick()
                env[stmt.var] = float(start + k * step)
                self.block(stmt.body.statements, env)
        except _Break:
            pass
        finally:
            self.loop_depth -= 1

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise Unsupported(f"more than {MAX_ITERATIONS} loop iterations")

    def slice_assign(self, stmt: ast.SliceAssign, env: dict[str, Value]) -> None:
        if stmt.name not in env:
            raise RefError(f"unknown name {stmt.name!r}")
        target = _matrix(env[stmt.name], "a slice-assigned name")
        rows, single_r = self.subscript(stmt.rows, target.shape[0], env)
        cols, single_c = self.subscript(stmt.cols, target.shape[1], env)
        value = self.expr(stmt.value, env)
        region = (rows.stop - rows.start, cols.stop - cols.start)
        if _is_matrix(value) and value.shape != region:
            raise RefError(f"assigning a {value.shape} matrix to a {region} region")
        if not (_is_matrix(value) or _is_scalar(value)):
            raise RefError("slice assignment of a non-number")
        copy = target.copy()
        copy[rows, cols] = value
        env[stmt.name] = copy

    def expr_statement(self, expr: ast.Expr, env: dict[str, Value]) -> None:
        if isinstance(expr, ast.Call) and expr.name in self.functions:
            self.call_user(expr, env)
            return
        if not (isinstance(expr, ast.Call) and expr.name == "print"):
            raise Unsupported("only print(...) and user calls as statements")
        if expr.keywords:
            raise RefError("print takes no keywords")
        values = [self.expr(a, env) for a in expr.args]
        if len(values) == 1 and not isinstance(values[0], str):
            self.outcome.prints.append((text_of(expr.args[0]), _own(values[0])))
        else:  # a message: "a 1 b [2x3]" in jampi; its formatting is not part of this reference
            self.outcome.prints.append(("<message>", tuple(_own(v) for v in values)))

    # ---- user functions ----------------------------------------------------------------

    def call_user(self, call: ast.Call, env: dict[str, Value]) -> tuple[Value, ...]:
        fn = self.functions[call.name]
        if call.name in self.active:
            raise RefError(f"recursion in {call.name}")
        if call.keywords or len(call.args) != len(fn.params):
            raise RefError(f"{call.name} takes {len(fn.params)} arguments")
        args = [self.expr(a, env) for a in call.args]
        body = fn.body.statements
        if not body or not isinstance(body[-1], ast.Return):
            raise RefError(f"{call.name} does not end with return")
        local = dict(self.params)  # a fresh instance: params and arguments only, no other globals, no leaks
        local.update(zip(fn.params, args, strict=True))
        self.calls += 1
        self.active.append(call.name)
        depth, self.loop_depth = self.loop_depth, 0  # break does not cross a call
        try:
            self.block(body[:-1], local)
            return tuple(self.expr(v, local) for v in body[-1].values)
        finally:
            self.loop_depth = depth
            self.active.pop()

    def multi(self, expr: ast.Expr, env: dict[str, Value]) -> tuple[Value, ...]:
        if isinstance(expr, ast.Call) and expr.name in self.functions:
            return self.call_user(expr, env)
        raise Unsupported("a, b = ... of anything but a user function")

    # ---- expressions -------------------------------------------------------------------

    def literal(self, expr: ast.Expr) -> Value:
        if isinstance(expr, ast.Number):
            return float(expr.value)
        if isinstance(expr, ast.String):
            return expr.value
        if isinstance(expr, ast.Bool):
            return 1.0 if expr.value else 0.0
        if isinstance(expr, ast.Neg) and isinstance(expr.operand, ast.Number):
            return -float(expr.operand.value)
        raise RefError("a param value is a number, a string or true/false")

    def truth(self, v: Value, what: str) -> bool:
        return _scalar(v, what) != 0

    def expr(self, e: ast.Expr, env: dict[str, Value]) -> Value:
        if isinstance(e, ast.Number):
            return float(e.value)
        if isinstance(e, ast.String):
            return e.value
        if isinstance(e, ast.Bool):
            return 1.0 if e.value else 0.0
        if isinstance(e, ast.Var):
            if e.name not in env:
                raise RefError(f"unknown name {e.name!r}")
            return env[e.name]
        if isinstance(e, ast.Neg):
            return _numeric(np.negative, self.expr(e.operand, env))
        if isinstance(e, ast.Transpose):
            return _matrix(self.expr(e.operand, env), ".T operand").T.copy()
        if isinstance(e, ast.Not):
            return 0.0 if self.truth(self.expr(e.operand, env), "not's operand") else 1.0
        if isinstance(e, ast.BinOp):
            return self.binop(e, env)
        if isinstance(e, ast.Index):
            return self.index(e, env)
        if isinstance(e, ast.Call):
            return self.call(e, env)
        raise Unsupported(type(e).__name__)

    def binop(self, e: ast.BinOp, env: dict[str, Value]) -> Value:
        op = e.op
        if op in ("and", "or"):
            left = self.truth(self.expr(e.left, env), f"{op}'s operand")
            if op == "and" and not left:
                return 0.0
            if op == "or" and left:
                return 1.0
            return 1.0 if self.truth(self.expr(e.right, env), f"{op}'s operand") else 0.0
        a, b = self.expr(e.left, env), self.expr(e.right, env)
        if op == "@":
            a, b = _matrix(a, "@ operand"), _matrix(b, "@ operand")
            if a.shape[1] != b.shape[0]:
                raise RefError(f"@ of {a.shape} and {b.shape}")
            return a @ b
        if op in ("==", "!=") and (isinstance(a, str) or isinstance(b, str)):
            if not (isinstance(a, str) and isinstance(b, str)):
                raise RefError("a string compares with a string only")
            return 1.0 if (a == b) == (op == "==") else 0.0
        kernels = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "**": np.power,
                   "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
                   "==": np.equal, "!=": np.not_equal}
        if op not in kernels:
            raise Unsupported(f"operator {op}")
        if op in ("<", "<=", ">", ">=", "==", "!="):
            self.watch(a, b, e)
        return _numeric(kernels[op], a, b)

    def watch(self, a: Value, b: Value, e: ast.Expr) -> None:
        """Note a comparison whose answer hangs on rounding (see the module docstring)."""
        if not ((_is_scalar(a) or _is_matrix(a)) and (_is_scalar(b) or _is_matrix(b))):
            return
        with np.errstate(all="ignore"):
            x, y = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
            exact = (x == np.round(x)) & (y == np.round(y)) & (np.abs(x) < 2**40) & (np.abs(y) < 2**40)
            scale = np.maximum(FRAGILE_FLOOR, np.maximum(np.abs(x), np.abs(y)))
            close = np.abs(x - y) <= FRAGILE_RTOL * scale
        if np.any(close & ~exact):
            self.outcome.fragile.append(f"{text_of(e)} at line {e.span.line}")

    def subscript(self, sub: ast.Expr, extent: int, env: dict[str, Value]) -> tuple[slice, bool]:
        if isinstance(sub, ast.SliceExpr):
            bounds = []
            for bound, default in ((sub.start, 0), (sub.stop, extent)):
                if bound is None:
                    bounds.append(default)
                    continue
                k = _whole(self.expr(bound, env), "a slice bound")
                if not -extent <= k <= extent:
                    raise RefError(f"slice bound {k} out of range for {extent}")
                bounds.append(k + extent if k < 0 else k)
            if bounds[1] <= bounds[0]:
                raise RefError(f"empty slice {bounds}")
            return slice(bounds[0], bounds[1]), False
        k = _whole(self.expr(sub, env), "an index")
        if not -extent <= k < extent:
            raise RefError(f"index {k} out of range for {extent}")
        k = k + extent if k < 0 else k
        return slice(k, k + 1), True

    def index(self, e: ast.Index, env: dict[str, Value]) -> Value:
        x = _matrix(self.expr(e.target, env), "an indexed value")
        rows, single_r = self.subscript(e.rows, x.shape[0], env)
        cols, single_c = self.subscript(e.cols, x.shape[1], env)
        part = x[rows, cols]
        if single_r and single_c:
            return float(part[0, 0])
        return part.copy()

    # ---- calls ---------------------------------------------------------------------------

    def call(self, e: ast.Call, env: dict[str, Value]) -> Value:
        name = e.name
        if name in self.functions:
            values = self.call_user(e, env)
            if len(values) != 1:
                raise RefError(f"{name} returns {len(values)} values, used as one")
            return values[0]
        args = [self.expr(a, env) for a in e.args]
        kw = {k.name: self.expr(k.value, env) for k in e.keywords}
        if kw.get("dtype", "float64") != "float64" or "density" in kw:
            raise Unsupported("float32 or sparse values")
        kw.pop("dtype", None)

        def take(n: int, allowed=()) -> list[Value]:
            if len(args) != n:
                raise RefError(f"{name}() takes {n} arguments, got {len(args)}")
            extra = set(kw) - set(allowed)
            if extra:
                raise RefError(f"{name}() has no keyword {sorted(extra)}")
            return args

        if name in ("randn", "random"):
            r, c = take(2, ("seed",))
            seed = _whole(kw.get("seed", 0.0), "seed")
            shape = (_whole(r, "rows"), _whole(c, "cols"))
            return generate("normal" if name == "randn" else "uniform", shape, "float64", seed=seed)
        if name in ("ones", "zeros"):
            r, c = take(2)
            return generate(name, (_whole(r, "rows"), _whole(c, "cols")), "float64")
        if name == "eye":
            (n,) = take(1)
            return np.eye(_whole(n, "n"))
        if name in ("sum", "mean", "max", "min"):
            (x,) = take(1, ("axis",))
            x = _matrix(x, f"{name}'s argument")
            fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[name]
            if "axis" not in kw:
                return float(fn(x))
            axis = _whole(kw["axis"], "axis")
            if axis not in (0, 1):
                raise RefError("axis must be 0 or 1")
            return fn(x, axis=axis, keepdims=True).astype(np.float64)
        if name == "norm":
            (x,) = take(1)
            return float(np.linalg.norm(_matrix(x, "norm's argument")))
        if name == "trace":
            (x,) = take(1)
            x = _matrix(x, "trace's argument")
            if x.shape[0] != x.shape[1]:
                raise RefError("trace of a non-square matrix")
            return float(np.trace(x))
        if name in ("nrow", "ncol"):
            (x,) = take(1)
            return float(_matrix(x, f"{name}'s argument").shape[0 if name == "nrow" else 1])
        unary = {"abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "tanh": np.tanh, "sign": np.sign}
        if name in unary:
            (x,) = take(1)
            if name == "sign":
                self.watch(x, 0.0, e)
            return _numeric(unary[name], x)
        if name in ("maximum", "minimum"):
            a, b = take(2)
            return _numeric(np.maximum if name == "maximum" else np.minimum, a, b)
        if name == "where":
            c, a, b = take(3)
            self.watch(c, 0.0, e)
            return _numeric(lambda c, a, b: np.where(c != 0, a, b), c, a, b)
        if name in ("hcat", "vcat"):
            if kw or not args:
                raise RefError(f"{name}() takes matrices")
            mats = [_matrix(a, f"{name}'s argument") for a in args]
            axis = 1 if name == "hcat" else 0
            if len({m.shape[1 - axis] for m in mats}) != 1:
                raise RefError(f"{name} of mismatched shapes")
            return np.concatenate(mats, axis=axis)
        if name == "diag":
            (x,) = take(1)
            x = _matrix(x, "diag's argument")
            if 1 in x.shape:
                return np.diag(x.ravel())
            if x.shape[0] != x.shape[1]:
                raise RefError("diag of a non-square matrix")
            return np.diag(x).reshape(-1, 1).copy()
        raise Unsupported(f"function {name}()")


def _own(v: Value) -> Value:
    return v.copy() if _is_matrix(v) else v


def evaluate(text: str, params: dict[str, Value] | None = None, name: str = "<ref>") -> Outcome:
    """Run a program with the reference semantics: its prints as (label, value), in order."""
    return Evaluator(parse(text, name), params).run()
