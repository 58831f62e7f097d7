"""AST → typed IR: resolves names and parameters, reads file headers, checks
every shape. Anything wrong here is reported before a single job runs."""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ops
from ..errors import ArgumentError, InputError, ResolveError, ShapeError, Source, Span
from ..gcpause import paused_gc
from ..grammar import ast
from ..grammar.ast import source_text
from . import ir
from .blocks import BlockStatements, register
from .call_hoist import hoist_calls
from .graph import Program
from .inputs import MAX_DIMENSION, inspect_input
from .linalg import FUNCTIONS as LINALG
from .linalg import Sketch
from .outputs import output_format
from .short_circuit import short_circuit
from .signatures import FUNCTIONS, KEYWORDS, RESERVED, STATEMENT_FUNCTIONS, Signature  # noqa: F401


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


def _value_span(given: ParamValue) -> Span | None:
    """The span of the value part of a ``--set NAME=VALUE`` (None for ``params=`` values)."""
    span = given.span
    if span is None or span.source.name != "--set":
        return None
    text = span.source.text
    start = text.find("=") + 1
    if start == 0 or "\n" in text:
        return span
    while start < len(text) and text[start] == " ":
        start += 1
    return Span(span.source, 1, start + 1, 1, max(len(text), start) + 1)


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Builder(BlockStatements):
    def __init__(self, program: ast.Program, overrides: dict[str, ParamValue], base_dir: str):
        self.ast = program
        self.base_dir = base_dir
        self.overrides = dict(overrides)
        self.env: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.outputs: list[ir.Node] = []
        self.bindings: list[tuple[str, ir.Node]] = []
        self.saved: dict[str, ir.Node] = {}  # path -> the value this program saves there
        self.param_uses: dict[int, str] = {}  # uid of a Const made for a use of a parameter -> its name

    # ------------------------------------------------------------ statements

    def build(self) -> Program:
        declared = {s.name for s in self.ast.statements if isinstance(s, ast.Param)}
        for name, value in self.overrides.items():
            if name not in declared:
                hint = _suggest(name, declared)
                listed = f" (it declares {', '.join(sorted(declared))})" if declared and not hint else ""
                listed = listed or ("" if declared else " (it declares none)")
                raise ResolveError(f"--set {name}: the program declares no parameter {name!r}{hint}{listed}",
                                   value.span)
        self._init_blocks(self.ast.statements)
        self._statements(self.ast.statements)
        flow = self.finish()
        if flow is not None:
            return flow
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
        if id(stmt) not in self.top_params:
            raise ResolveError("param is declared at the top level of a program, not in a block", stmt.span)
        self._check_bindable(stmt.name, stmt.name_span)
        if stmt.name in self.params:
            raise ResolveError(f"parameter {stmt.name!r} is declared twice", stmt.name_span)
        if stmt.name in self.env:
            raise ResolveError(f"parameter {stmt.name!r} is declared after {stmt.name!r} was assigned", stmt.name_span)
        override = self.overrides.get(stmt.name)
        if override is not None:
            value, span = override.value, override.span or stmt.span
            declared = stmt.value.value
            if isinstance(declared, float) and not isinstance(value, (float, int)) or isinstance(value, bool) \
                    and not isinstance(declared, bool):
                # The program declares a number: a word given for it is a typo, not a string.
                given = _value_span(override)
                typed = given.source.text[given.column - 1:given.end_column - 1] if given else str(value)
                raise ArgumentError(f"--set {stmt.name}={typed}: not a number (the program declares "
                                    f"{stmt.name} = {declared:g})", given or span)
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

    def _check_assignable(self, name: str, span: Span) -> None:
        if name in RESERVED:
            self._check_bindable(name, span)
        if name in self.params:
            raise ResolveError(f"{name!r} is a parameter and cannot be reassigned", span)

    def _bind(self, name: str, value: Any, span: Span) -> None:
        self.env[name] = value
        self.assign_lines[name] = span
        self.partial.pop(name, None)
        if isinstance(value, ir.Node):
            self.bindings.append((name, value))

    def _user_call_of(self, expr: ast.Expr) -> ast.Call | None:
        return expr if isinstance(expr, ast.Call) and self.user_function(expr.name) else None

    def _assign(self, stmt: ast.Assign) -> None:
        self._check_assignable(stmt.name, stmt.name_span)
        call = self._user_call_of(stmt.value)
        value = self.call_user(call, 1)[0] if call else self.expr(stmt.value)
        self._bind(stmt.name, value, stmt.name_span)

    def _slice_assign(self, stmt: ast.SliceAssign) -> None:
        self._check_assignable(stmt.name, stmt.name_span)
        target = self._e_Var(ast.Var(stmt.name_span, stmt.name))
        if not isinstance(target, ir.Node) or not target.type.is_matrix:
            raise ShapeError(f"{stmt.name!r} is not a matrix: only a matrix's region can be assigned",
                             stmt.name_span)
        (i, rows, _), (j, cols, _) = (self._subscript(sub, target.type.shape[axis])
                                      for axis, sub in enumerate((stmt.rows, stmt.cols)))
        value = self._operand(self.expr(stmt.value), stmt.value.span)
        self._bind(stmt.name, ir.Update(target, value, i, j, rows, cols, span=stmt.span), stmt.name_span)

    def _multi_assign(self, stmt: ast.MultiAssign) -> None:
        call = stmt.value
        for index, (name, span) in enumerate(zip(stmt.names, stmt.name_spans, strict=True)):
            self._check_assignable(name, span)
            if name in stmt.names[:index]:
                raise ResolveError(f"{name!r} is named twice on the left", span)
        if self._user_call_of(call):
            for name, value, span in zip(stmt.names, self.call_user(call, len(stmt.names)), stmt.name_spans,
                                         strict=True):
                self._bind(name, value, span)
            return
        declared = LINALG.get(call.name) if isinstance(call, ast.Call) else None
        if declared is None or len(declared.parts) < 2:
            raise ResolveError("only qr, svd, eigh and user functions give several values; assign one value "
                               "per name",
                               stmt.value.span)
        if len(stmt.names) != len(declared.parts):
            want = ", ".join(declared.parts)
            raise ResolveError(f"{call.name}() gives {len(declared.parts)} values ({want} = {call.name}(...)), "
                               f"not {len(stmt.names)}", stmt.span)
        args = self._bind_args(call)
        x = self._matrix_or_scalar(args["x"], call.args[0].span if call.args else call.span)
        k = None if args.get("k") is None else self._whole(args["k"], "k", minimum=1)
        sketch = self._sketch(call, args, k)
        for part, (name, span) in enumerate(zip(stmt.names, stmt.name_spans, strict=True)):
            self._bind(name, ir.Factor(call.name, x, part=part, k=k, sketch=sketch, span=call.span), span)

    def _sketch(self, call: ast.Call, args: dict[str, Any], k: int | None) -> Sketch | None:
        """svd(A, k=, oversample=, iters=, seed=): how the randomized SVD sketches A."""
        given = {name: args[name] for name in ("oversample", "iters", "seed") if args.get(name) is not None}
        if not given:
            return None
        if k is None:
            name = next(iter(given))
            raise ArgumentError(f"{name}= tunes the randomized svd(A, k=...): give k too",
                                next(kw.span for kw in call.keywords if kw.name == name))
        return Sketch(**{name: self._whole(value, name, minimum=0) for name, value in given.items()})

    def _expr_statement(self, stmt: ast.ExprStmt) -> None:
        expr = stmt.expr
        if self._user_call_of(expr):
            self.call_user(expr, None)
            return
        if not (isinstance(expr, ast.Call) and expr.name in STATEMENT_FUNCTIONS):
            raise ResolveError("this value is not used: assign it (X = ...) or print(...) it", expr.span)
        args = self._bind_args(expr)
        if expr.name == "print":
            self._print(expr, args["args"])
            return
        x = self._matrix_or_scalar(args["x"], expr.args[0].span if expr.args else expr.span)
        if any(frame.loops for frame in self.frames):
            raise ResolveError("save() inside a loop would write the file again every iteration: save the "
                               "result after the loop", expr.span)
        path = self._path(args["path"], "save")
        source = self.ast.source.name
        fmt = output_format(path, self._opt_str(args["format"]), args["path"].span,
                            protected=(self.base_dir, os.getcwd()),
                            protected_files=(source,) if not source.startswith("<") else ())
        if path in self.saved:
            raise InputError(f"{path} is saved twice", args["path"].span)
        for other in self.saved:
            if path.startswith(other + os.sep) or other.startswith(path + os.sep):
                inner, outer = (path, other) if path.startswith(other + os.sep) else (other, path)
                raise InputError(f"{inner} lies inside {outer}, which is saved too: one output would "
                                 "replace the other", args["path"].span)
        self.saved[path] = x
        options = tuple((k, self._opt_str(args[k])) for k in ("form",) if args[k] is not None)
        self.outputs.append(ir.Save(x, path, fmt, options, span=expr.span))

    def _print(self, call: ast.Call, values: list[Any]) -> None:
        """``print(x)`` labels a value with its text; ``print("a", x, ...)`` shows the items on one line."""
        if len(values) == 1 and not isinstance(values[0], StrVal):
            x = self._matrix_or_scalar(values[0], call.args[0].span)
            self.outputs.append(ir.Print(x, source_text(call.args[0]), span=call.span))
            return
        nodes, texts = [], []
        for value, arg in zip(values, call.args, strict=True):
            if isinstance(value, StrVal):
                texts.append(value.value)
            else:
                nodes.append(self._operand(value, arg.span))
                texts.append(None)
        self.outputs.append(ir.Message(tuple(nodes), tuple(texts), span=call.span))

    def _subscript(self, sub: ast.Expr, extent: int) -> tuple[ir.Node, int, bool]:
        """(start, size, single index?) of one subscript of X[r, c] along an axis of ``extent``."""
        if isinstance(sub, ast.SliceExpr):
            bounds = []
            for bound, default in ((sub.start, 0), (sub.stop, extent)):
                if bound is None:
                    bounds.append(default)
                    continue
                known = self._static_number(self._operand(self.expr(bound), bound.span))
                if known is None or known != int(known):
                    raise ArgumentError("slice bounds must be whole numbers known before the run (literals, "
                                        "params, nrow/ncol and arithmetic on them)", bound.span)
                known = int(known)
                if not -extent <= known <= extent:
                    raise ShapeError(f"slice bound {known} is out of range for {extent}", bound.span)
                bounds.append(known + extent if known < 0 else known)
            if bounds[1] <= bounds[0]:
                raise ShapeError(f"the slice {bounds[0]}:{bounds[1]} is empty", sub.span)
            return ir.Const(float(bounds[0]), span=sub.span), bounds[1] - bounds[0], False
        index = self._operand(self.expr(sub), sub.span)
        if not index.type.is_scalar:
            raise ShapeError("an index is a scalar (or a slice a:b)", sub.span)
        known = self._static_number(index)
        if known is None:
            return index, 1, True  # checked when it runs (negative counts from the end there too)
        if known != int(known) or not -extent <= known < extent:
            raise ShapeError(f"index {known:g} is out of range for {extent}", sub.span)
        return ir.Const(float(known + extent if known < 0 else known), span=sub.span), 1, True

    def _index(self, node: ast.Index) -> ir.Node:
        target = self._operand(self.expr(node.target), node.target.span)
        if not target.type.is_matrix:
            raise ShapeError("only a matrix can be indexed", node.target.span)
        (i, rows, single_row), (j, cols, single_col) = (self._subscript(sub, target.type.shape[axis])
                                                        for axis, sub in enumerate((node.rows, node.cols)))
        return ir.Index(target, i, j, rows, cols, scalar=single_row and single_col, span=node.span)

    def _operand(self, value: Any, span: Span) -> ir.Node:
        """A matrix or a scalar; true/false count as 1/0 where a scalar is expected."""
        if isinstance(value, BoolVal):
            return ir.Const(1.0 if value.value else 0.0, span=value.span or span)
        return self._matrix_or_scalar(value, span)

    # ------------------------------------------------------------ expressions

    def expr(self, root: ast.Expr) -> Any:
        """The value of an expression: an IR node, or a string/bool/tuple value for arguments.

        Evaluated with an explicit stack, not by recursion on the AST: ``A + A + ... + A``
        parses to a tree as deep as it has operators, and a generated program can nest
        far past Python's recursion limit. Operands and arguments are evaluated and
        checked left to right, with the errors a recursive walk would give in its order."""
        leaf = _LEAVES.get(type(root))
        if leaf is not None:  # a name or a literal: most operands, no stack needed
            return leaf(self, root)
        values: list[Any] = []  # the values of the operands evaluated so far
        # What is left to do for the nodes above the current one, as (node, state). The
        # state says how far the node got: for an operation, how many operands are on
        # ``values``; for a call or a tuple, how many arguments (items). Leaf operands are
        # evaluated on the spot; a node goes on the stack only while a child is evaluated.
        stack: list[tuple[ast.Expr, int]] = []
        node, state = root, 0
        while True:
            cls = type(node)
            if cls is _BINOP:
                if state == 0:
                    left = node.left
                    leaf = _LEAVES.get(type(left))
                    if leaf is None:
                        stack.append((node, 1))
                        node = left
                        continue
                    values.append(leaf(self, left))
                if state < 2:
                    a = values[-1]
                    if not isinstance(a, _NODE) and not isinstance(a, StrVal):
                        values[-1] = a = self._operand(a, node.left.span)
                    right = node.right
                    leaf = _LEAVES.get(type(right))
                    if leaf is None:
                        stack.append((node, 2))
                        node, state = right, 0
                        continue
                    b = leaf(self, right)
                else:
                    b = values.pop()
                    a = values[-1]
                if not isinstance(b, _NODE) or not isinstance(a, _NODE):
                    if isinstance(a, StrVal) and isinstance(b, StrVal) and node.op in ("==", "!="):
                        values[-1] = ir.Const(float((a.value == b.value) == (node.op == "==")), span=node.span)
                        if not stack:
                            return values[0]
                        node, state = stack.pop()
                        continue
                    a = values[-1] = self._operand(a, node.left.span)
                    b = self._operand(b, node.right.span)
                if node.op == "@":
                    values[-1] = _MATMUL(a, b, span=node.span)
                else:
                    values[-1] = _BINARY(node.op, a, b, span=node.span)
            elif cls is _NEG or cls is _TRANSPOSE or cls is _NOT:
                operand = node.operand
                if state == 0:
                    leaf = _LEAVES.get(type(operand))
                    if leaf is None:
                        stack.append((node, 1))
                        node = operand
                        continue
                    x = leaf(self, operand)
                else:
                    x = values.pop()
                if not isinstance(x, _NODE):
                    x = self._operand(x, operand.span)
                if cls is _NEG or cls is _NOT:
                    values.append(ir.Unary("neg" if cls is _NEG else "not", x, span=node.span))
                else:
                    values.append(x if x.type.is_scalar else ir.Transpose(x, span=node.span))
            elif cls is _CALL:
                if state == 0:
                    if node.name in STATEMENT_FUNCTIONS:
                        raise ResolveError(f"{node.name}() is a statement and gives no value", node.name_span)
                    if self.user_function(node.name):
                        values.append(self.call_user(node, 1)[0])
                        if not stack:
                            return values[0]
                        node, state = stack.pop()
                        continue
                    self._check_call(node)
                positional = len(node.args)
                total = positional + len(node.keywords)
                if state < total:
                    if state < positional:
                        item = node.args[state]
                    else:
                        self._check_keyword(node, state - positional)
                        item = node.keywords[state - positional].value
                    stack.append((node, state + 1))
                    node, state = item, 0
                    continue
                evaluated = values[len(values) - total :]
                del values[len(values) - total :]
                values.append(self._call(node, self._bind_values(node, evaluated)))
            elif cls is _INDEX:
                values.append(self._index(node))
            elif cls is _TUPLE:
                total = len(node.items)
                if state < total:
                    stack.append((node, state + 1))
                    node, state = node.items[state], 0
                    continue
                items = tuple(values[len(values) - total :])
                del values[len(values) - total :]
                values.append(TupleVal(items, node.span))
            else:
                leaf = _LEAVES.get(cls)
                if leaf is None:  # an AST class this builder does not know
                    raise TypeError(f"cannot build a {cls.__name__} expression")
                values.append(leaf(self, node))
            if not stack:
                return values[0]
            node, state = stack.pop()

    def _e_Number(self, node: ast.Number):
        return ir.Const(node.value, span=node.span)

    def _e_String(self, node: ast.String):
        return StrVal(node.value, self.base_dir, node.span)

    def _e_Bool(self, node: ast.Bool):
        return BoolVal(node.value, node.span)

    def _e_Var(self, node: ast.Var):
        value = self.env.get(node.name)
        if value is not None:
            if type(value) is ir.Const and node.name in self.params:
                use = ir.Const(value.value, span=node.span)  # errors about a parameter point at its use
                self.param_uses[use.uid] = node.name
                return use
            if isinstance(value, ir.Node):
                return value
            # Re-anchor literals so errors point at this use, not the declaration.
            return type(value)(*[getattr(value, f) for f in value.__dataclass_fields__ if f != "span"], node.span)
        if node.name in FUNCTIONS:
            raise ResolveError(f"{node.name!r} is a function; call it as {node.name}(...)", node.span)
        if node.name in self.partial:
            raise ResolveError(f"{node.name!r} is not bound on every path to here (it is bound inside a loop or "
                               f"in some branches only, line {self.partial[node.name]})", node.span)
        hint = _suggest(node.name, self.env)
        raise ResolveError(f"unknown name {node.name!r}{hint}", node.span)

    def _call(self, node: ast.Call, args: dict[str, Any]) -> ir.Node:
        """A function call whose arguments are evaluated and bound (``args``)."""
        name = node.name
        if name in ("random", "randn", "zeros", "ones", "eye"):
            if name == "eye":
                n = self._size(args["n"])
                shape = (n, n)
            else:
                shape = (self._size(args["r"]), self._size(args["c"]))
            kind = {"random": "uniform", "randn": "normal"}.get(name, name)
            seed = self._whole(args["seed"], "seed", minimum=0) if "seed" in args else 0
            density = self._density(args.get("density"))
            return ir.Generate(kind, shape, self._dtype(args["dtype"]) or "float64", seed, density, span=node.span)
        if name == "load":
            return self._load(node, args)
        declared = ops.FUNCTIONS.get(name)
        if declared is not None:
            operands = [self._matrix_or_scalar(args[p], self._arg_span(node, i, p))
                        for i, p in enumerate(FUNCTIONS[name].positional)]
            if declared.arity == 3:
                return ir.Where(*operands, span=node.span)
            if declared.arity == 2:
                return ir.Binary(name, *operands, span=node.span)
            return ir.Unary(name, *operands, span=node.span)
        if name in ("hcat", "vcat"):
            parts = [self._matrix_or_scalar(v, a.span) for v, a in zip(args["args"], node.args, strict=True)]
            joined = parts[0]
            for part in parts[1:]:
                joined = ir.Concat(1 if name == "hcat" else 0, joined, part, span=node.span)
            if not joined.type.is_matrix:
                raise ShapeError(f"{name}() joins matrices, got a scalar", node.span)
            return joined
        linear = LINALG.get(name)
        if linear is not None:
            if len(linear.parts) > 1:
                names = ", ".join(linear.parts)
                raise ResolveError(f"{name}() gives {len(linear.parts)} values: write {names} = {name}(...)",
                                   node.span)
            if linear.inputs == 2:
                a, b = (self._matrix_or_scalar(args[p], self._arg_span(node, i, p)) for i, p in enumerate("ab"))
                return ir.Solve(name, a, b, span=node.span)
            return ir.Factor(name, self._matrix_or_scalar(args["x"], node.args[0].span), span=node.span)
        x = self._matrix_or_scalar(args["x"], node.args[0].span)
        if name in ("sparse", "dense"):
            if x.type.is_matrix and x.type.storage == name:
                return x
            return ir.Store(x, name, span=node.span)
        if name in ("nrow", "ncol"):
            if not x.type.is_matrix:
                raise ShapeError(f"{name}() needs a matrix, got a scalar", node.args[0].span)
            return ir.Const(float(x.type.shape[0 if name == "nrow" else 1]), span=node.span)
        if name in ir.REDUCE_OPS:
            axis = args.get("axis")
            axis = None if axis is None else self._whole(axis, "axis", minimum=0)
            return ir.Reduce(name, x, axis=axis, span=node.span)
        raise ResolveError(f"{name}() cannot be used here", node.name_span)  # pragma: no cover

    @staticmethod
    def _arg_span(call: ast.Call, index: int, name: str) -> Span:
        if index < len(call.args):
            return call.args[index].span
        return next((k.span for k in call.keywords if k.name == name), call.span)

    # ------------------------------------------------------------ helpers

    def _bind_args(self, call: ast.Call) -> dict[str, Any]:
        """Check a call's arguments against its signature and evaluate them, in order."""
        self._check_call(call)
        values = [self.expr(arg) for arg in call.args]
        for index, kw in enumerate(call.keywords):
            self._check_keyword(call, index)
            values.append(self.expr(kw.value))
        return self._bind_values(call, values)

    def _check_call(self, call: ast.Call) -> None:
        """What can be checked of a call before its arguments are evaluated: the name and the arity."""
        if call.name not in FUNCTIONS:
            self.unknown_call(call)
            raise ResolveError(f"unknown function {call.name!r}{_suggest(call.name, FUNCTIONS)}", call.name_span)
        sig = FUNCTIONS[call.name]
        if sig.variadic:
            if not call.args:
                raise ArgumentError(f"{call.name}() needs at least one matrix", call.span)
            return
        if len(call.args) > len(sig.positional) or (
            len(call.args) < len(sig.positional)
            and not all(p in {k.name for k in call.keywords} for p in sig.positional[len(call.args) :])
        ):
            want = ", ".join(sig.positional)
            raise ArgumentError(
                f"{call.name}() takes {len(sig.positional)} argument{'s' * (len(sig.positional) != 1)} "
                f"({want}), got {len(call.args)}",
                call.span,
            )

    def _check_keyword(self, call: ast.Call, index: int) -> None:
        """Keyword ``index`` of a call is one the function has, and not given already."""
        sig = FUNCTIONS[call.name]
        kw = call.keywords[index]
        if kw.name not in sig.keywords and kw.name not in sig.positional:
            allowed = ", ".join(sig.keywords) or "none"
            raise ArgumentError(f"{call.name}() has no argument {kw.name!r} (keywords: {allowed})", kw.span)
        if kw.name in sig.positional[: len(call.args)] or any(k.name == kw.name for k in call.keywords[:index]):
            raise ArgumentError(f"{call.name}() got {kw.name!r} twice", kw.span)

    def _bind_values(self, call: ast.Call, values: list[Any]) -> dict[str, Any]:
        """Argument name -> value, from the evaluated positional then keyword arguments."""
        sig = FUNCTIONS[call.name]
        if sig.variadic:
            return {"args": values[: len(call.args)]}
        bound: dict[str, Any] = dict(zip(sig.positional, values[: len(call.args)], strict=False))
        for kw, value in zip(call.keywords, values[len(call.args) :], strict=True):
            bound[kw.name] = value
        for name, default in sig.keywords.items():
            bound.setdefault(name, default)
        return bound

    def _matrix_or_scalar(self, value: Any, span: Span) -> ir.Node:
        if isinstance(value, ir.Node):
            return value
        what = {StrVal: "a string", BoolVal: "true/false", TupleVal: "a tuple"}.get(type(value), "this")
        raise ResolveError(f"expected a matrix or a number here, got {what}", getattr(value, "span", None) or span)

    def _static_number(self, value: Any) -> float | None:
        """The value of a scalar expression built only from numbers and parameters.

        Iterative (``1 + 1 + ... + 1`` is as deep as it is long): a post-order walk over
        negations and arithmetic, with the recursive definition's results."""
        if isinstance(value, ir.Const):
            return value.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)  # a signature default
        results: list[float | None] = []
        stack: list[tuple[Any, bool]] = [(value, False)]
        while stack:
            node, ready = stack.pop()
            if isinstance(node, ir.Const):
                results.append(node.value)
            elif isinstance(node, ir.Unary) and node.operator in ("neg", "not"):
                if not ready:
                    stack.append((node, True))
                    stack.append((node.x, False))
                elif results[-1] is not None:
                    results[-1] = -results[-1] if node.operator == "neg" else float(results[-1] == 0)
            elif isinstance(node, ir.Binary):
                if not ready:
                    stack.append((node, True))
                    stack.append((node.b, False))
                    stack.append((node.a, False))
                    continue
                b = results.pop()
                a = results[-1]
                if a is None or b is None or (node.operator == "/" and b == 0) or node.operator not in _STATIC:
                    results[-1] = None
                else:
                    results[-1] = float(_STATIC[node.operator](a, b))
            else:
                results.append(None)
        return results[0]

    def _whole(self, value: Any, what: str, minimum: int, maximum: int | None = None) -> int:
        number = self._static_number(value)
        span = getattr(value, "span", None)
        if number is None:
            raise ArgumentError(f"{what} must be a number known before the run (a literal or a parameter)", span)
        problem = None
        if not math.isfinite(number):
            problem = "must be a finite whole number"
        elif number != int(number):
            problem = "must be a whole number"
        elif number < minimum:
            problem = f"must be at least {minimum}"
        elif maximum is not None and number > maximum:
            problem = f"must be at most {maximum}"
        if problem is None:
            return int(number)
        shown = f"{number:g}"
        override = self._override_of(value)
        if override is not None:  # a parameter set from outside: point at where it was set
            name, given = override
            value_span = _value_span(given)
            if value_span is None:  # params= of the Python API: no text to point at
                raise ArgumentError(f"parameter {name!r}: {what} {problem}, got {shown}", span)
            typed = value_span.source.text[value_span.column - 1 : value_span.end_column - 1]
            shown = repr(typed) if typed == shown else f"{typed!r} ({shown})"
            raise ArgumentError(f"--set {name}: {what} {problem}, got {shown}", value_span)
        raise ArgumentError(f"{what} {problem}, got {shown}", span)

    def _override_of(self, value: Any) -> tuple[str, ParamValue] | None:
        """(name, value) if ``value`` is a use of a parameter set with ``--set`` (or ``params=``)."""
        name = self.param_uses.get(getattr(value, "uid", None))
        if name is None or name not in self.overrides:
            return None
        return name, self.overrides[name]

    def _size(self, value: Any) -> int:
        return self._whole(value, "a matrix size", minimum=1, maximum=MAX_DIMENSION)

    def _opt_str(self, value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, StrVal):
            return value.value
        raise ResolveError("expected a string here", getattr(value, "span", None))

    def _dtype(self, value: Any) -> str | None:
        text = self._opt_str(value)
        if text is not None and text not in ir.FLOAT_DTYPES:
            raise ArgumentError(f"dtype must be \"float64\" or \"float32\", got {text!r}", value.span)
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
                raise ArgumentError("shape must be a pair (rows, cols)", getattr(tup, "span", None))
            shape = (self._size(tup.items[0]), self._size(tup.items[1]))
        finite = args["finite"]
        if not isinstance(finite, (bool, BoolVal)):
            raise ArgumentError("finite must be true or false", getattr(finite, "span", None))
        info = inspect_input(
            path,
            self._opt_str(args["format"]),
            shape=shape,
            form=self._opt_str(args["form"]),
            span=args["path"].span,
        )
        dtype = self._dtype(args["dtype"]) or info.dtype
        options = tuple(sorted({**info.options, "finite": bool(getattr(finite, "value", finite))}.items()))
        wanted = args.get("sparse")
        if wanted is not None and not isinstance(wanted, (bool, BoolVal)):
            raise ArgumentError("sparse must be true or false", getattr(wanted, "span", None))
        sparse = info.sparse if wanted is None else bool(getattr(wanted, "value", wanted))
        # A dense file read as sparse: its non-zeros are not in its header, at most every entry.
        entries = info.entries if info.entries is not None else info.shape[0] * info.shape[1]
        return ir.Load(path, info.format, info.shape, dtype, options, "sparse" if sparse else "dense",
                       entries if sparse else None, span=node.span)

    def _density(self, value: Any) -> float | None:
        if value is None:
            return None
        number = self._static_number(value)
        if number is None or not 0 < number <= 1:
            raise ArgumentError("density must be a number known before the run, above 0 and at most 1",
                                getattr(value, "span", None))
        return number


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


_STATIC = {  # the scalar operators a plan-time value may be built with
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "and": lambda a, b: bool(a) and bool(b), "or": lambda a, b: bool(a) or bool(b),
}
_BINOP, _NEG, _TRANSPOSE, _CALL, _TUPLE = ast.BinOp, ast.Neg, ast.Transpose, ast.Call, ast.TupleLit
_NOT, _INDEX = ast.Not, ast.Index
_NODE, _MATMUL, _BINARY = ir.Node, ir.MatMul, ir.Binary  # (module globals: one lookup, not two)
_LEAVES: dict[type, Any] = {  # AST classes without sub-expressions -> their Builder method
    ast.Number: Builder._e_Number,
    ast.String: Builder._e_String,
    ast.Bool: Builder._e_Bool,
    ast.Var: Builder._e_Var,
}


def build(
    program: ast.Program,
    overrides: dict[str, ParamValue] | None = None,
    base_dir: str | None = None,
) -> Program:
    if base_dir is None:
        name = program.source.name
        base_dir = str(Path(name).parent.resolve()) if not name.startswith("<") else os.getcwd()
    with paused_gc():
        return Builder(hoist_calls(short_circuit(program, frozenset(FUNCTIONS))), overrides or {}, base_dir).build()


register({
    ast.Param: Builder._param,
    ast.Assign: Builder._assign,
    ast.MultiAssign: Builder._multi_assign,
    ast.SliceAssign: Builder._slice_assign,
    ast.ExprStmt: Builder._expr_statement,
})
