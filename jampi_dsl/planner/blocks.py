"""The statements of version 2 that shape a program rather than compute a value:
loops, branches, ``break``, user functions, slice assignment. A mixin of the
builder (:class:`.build.Builder`), which owns names and expressions.

A loop or a branch decided at run time cuts the program (see :mod:`.flow`):
the open segment ends, every value still needed later is exported under its
slot, and from then on the names read :class:`~.ir.Input` nodes of those
slots. A branch whose condition is known before the run is decided here and
cut nothing; the branch not taken is still built, to check its shapes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..errors import ArgumentError, ParseError, ResolveError, ShapeError
from ..grammar import ast
from ..grammar.ast import source_text
from . import ir
from .flow import Branch, BreakItem, FlowProgram, Loop, Segment, exported_slots, hoist
from .graph import Program
from .liveness import (
    Reads,
    assigned,
    calls,
    expression_reads,
    position,
    statement_expressions,
    walk,
)
from .signatures import RESERVED


@dataclass
class Frame:
    """One scope being built: the program's top level, or one call of a user function."""

    env: dict[str, Any]
    prefix: str  # slots of this scope's names: prefix + name
    reads: Any  # a liveness.Reads, made when first needed
    statements: tuple = ()
    pos: tuple[int, int] = (0, 0)  # the statement being built
    loops: list = field(default_factory=list)  # carried names of the loops around that statement
    function: ast.Def | None = None
    returned: tuple | None = None


class BlockStatements:
    """Builder methods for blocks; expects the Builder's env/outputs/bindings and ``expr``."""

    def _init_blocks(self, statements) -> None:
        self.items: list = []
        self.frames = [Frame(self.env, "", None, tuple(statements))]
        self.functions: dict[str, ast.Def] = {}
        self.definitions = {s.name: s for s in statements if isinstance(s, ast.Def)}
        self.top_defs = {id(s) for s in statements if isinstance(s, ast.Def)}
        self.top_params = {id(s) for s in statements if isinstance(s, ast.Param)}
        self.partial: dict[str, int] = {}  # names bound on some paths only -> a line that binds one
        self.assign_lines: dict[str, Any] = {}  # name -> span of its latest assignment
        self.has_flow = False
        self._calls = itertools.count()
        self._check_recursion(statements)

    # ------------------------------------------------------------ statements

    def _statements(self, statements) -> None:
        frame = self.frames[-1]
        for stmt in statements:
            frame.pos = position(stmt.span)
            handler = _STATEMENTS.get(type(stmt))
            if handler is None:
                raise ResolveError(f"unexpected {type(stmt).__name__} statement", stmt.span)  # pragma: no cover
            try:
                handler(self, stmt)
            except RecursionError:  # a safety net: expressions are built without recursion
                raise ParseError("expression nested too deeply", stmt.span) from None

    def _slot(self, name: str) -> str:
        return self.frames[-1].prefix + name

    def _reads(self, frame: Frame) -> Reads:
        if frame.reads is None:
            frame.reads = Reads(frame.statements)
        return frame.reads

    def _emit_segment(self, exports: list[tuple[str, ir.Node]], label: str = "") -> None:
        outputs = [*self.outputs, *(ir.Export(node, slot, span=node.span) for slot, node in exports
                                     if not (isinstance(node, ir.Input) and node.slot == slot))]
        if outputs:
            program = Program(tuple(outputs), tuple(self.bindings), tuple(self.params.items()),
                              self.ast.source.name)
            self.items.append(Segment(program, label))
        self.outputs, self.bindings = [], []
        self.has_flow = True

    def _cut(self, force: set[str]) -> None:
        """End the open segment before a block: every value a later statement may read goes to its
        slot, and every name then reads its slot. ``force``: names the block may rebind (their
        value must be in the slot even if the block does not run)."""
        exports = []
        for depth, frame in enumerate(self.frames):
            innermost = depth == len(self.frames) - 1
            live = self._reads(frame).live(frame.pos)
            for name, value in list(frame.env.items()):
                if not isinstance(value, ir.Node):
                    continue
                forced = innermost and name in force
                if isinstance(value, ir.Const) and not forced:
                    continue  # a plan-time scalar stays one
                if name not in live and not forced:
                    del frame.env[name]  # never read again
                    continue
                slot = frame.prefix + name
                exports.append((slot, value))
                frame.env[name] = ir.Input(slot, value.type, name, span=value.span)
        self._emit_segment(exports)

    def _end_block(self, names) -> None:
        """End a block's last segment, exporting the current values of ``names``."""
        self._emit_segment([(self._slot(n), self.env[n]) for n in sorted(names) if n in self.env])

    def _condition(self, expr: ast.Expr, what: str) -> tuple[bool | None, ir.Node]:
        """(the value if known before the run, else None; the condition's node)."""
        value = self._operand(self.expr(expr), expr.span)
        if not value.type.is_scalar:
            raise ShapeError(f"the condition of {what} must be a scalar, got a {value.type} matrix "
                             "(reduce it: sum(), max(), norm()...)", expr.span)
        known = self._static_number(value)
        return (None if known is None else known != 0), value

    def _condition_segment(self, expr: ast.Expr, what: str) -> tuple[Segment, str]:
        _, value = self._condition(expr, what)
        slot = f"%cond{next(self._calls)}"
        saved, self.items = self.items, []
        self._emit_segment([(slot, value)])
        (segment,) = self.items
        self.items = saved
        return segment, slot

    def _checked_only(self, statements) -> None:
        """Build statements to check them (a branch not taken), then forget everything they did."""
        state = (dict(self.env), list(self.outputs), list(self.bindings), self.items, dict(self.saved),
                 self.has_flow, [dict(f.env) for f in self.frames])
        self.items = []
        try:
            self._statements(statements)
        finally:
            env, self.outputs, self.bindings, self.items, self.saved, self.has_flow, envs = state
            for frame, saved in zip(self.frames, envs, strict=True):
                frame.env.clear()
                frame.env.update(saved)
            self.env = self.frames[-1].env

    # ------------------------------------------------------------ loops

    def _loop(self, stmt) -> None:
        body_names = assigned(stmt.body.statements)
        carried = {n for n in body_names if isinstance(self.env.get(n), ir.Node)}
        if isinstance(stmt, ast.For) and isinstance(self.env.get(stmt.var), ir.Node):
            carried.add(stmt.var)
        self._cut(carried)
        entry = dict(self.env)
        header = self.ast.source.text.splitlines()[stmt.span.line - 1].strip().rstrip("{").strip()
        loop = Loop(stmt.__class__.__name__.lower(), header, stmt.span.line, [],
                    span=stmt.range_call.span if isinstance(stmt, ast.For) else stmt.cond.span)
        if isinstance(stmt, ast.For):
            self._range(stmt, loop)
            self.env[stmt.var] = ir.Input(loop.var_slot, ir.SCALAR, stmt.var, span=stmt.var_span)
        else:
            known, _ = self._condition(stmt.cond, "while")
            if known is None:
                loop.cond, loop.cond_slot = self._condition_segment(stmt.cond, "while")
                loop.always = False
                loop.watch = tuple(sorted({(v.name, self.env[v.name].slot) for v in expression_reads(stmt.cond)
                                           if isinstance(self.env.get(v.name), ir.Input)
                                           and self.env[v.name].type.is_scalar}))
            else:
                loop.always = known
        self.frames[-1].loops.append(carried)
        try:
            if loop.always or loop.cond is not None:
                saved, self.items = self.items, []
                self._statements(stmt.body.statements)
                self._check_carried(carried, entry)
                self._end_block(carried)
                loop.body, self.items = self.items, saved
            else:  # `while false`: checked, never run
                self._checked_only(stmt.body.statements)
        finally:
            self.frames[-1].loops.pop()
        varying = exported_slots(loop.body) | ({loop.var_slot} if loop.var_slot else set())
        hoisted, loop.hoisted = hoist(loop.body, varying, stmt.span.line)
        if hoisted is not None:
            self.items.append(hoisted)
        self.items.append(loop)
        self.env.clear()
        self.env.update(entry)
        if isinstance(stmt, ast.For) and stmt.var not in carried:
            self.env.pop(stmt.var, None)
        for name in body_names - carried:  # bound inside only: unbound if the loop never runs
            span = self.assign_lines.get(name)
            self.partial[name] = span.line if span is not None else stmt.span.line

    def _range(self, stmt: ast.For, loop: Loop) -> None:
        call = stmt.range_call
        if call.keywords or not 1 <= len(call.args) <= 3:
            raise ArgumentError("range() takes 1 to 3 numbers: range(stop), range(start, stop) or "
                                "range(start, stop, step)", call.span)
        values = [self._operand(self.expr(a), a.span) for a in call.args]
        for value, arg in zip(values, call.args, strict=True):
            if not value.type.is_scalar:
                raise ShapeError("range() bounds are scalars", arg.span)
        if len(values) == 1:
            values.insert(0, ir.Const(0.0))
        if len(values) == 2:
            values.append(ir.Const(1.0))
        if self._static_number(values[2]) == 0:
            raise ArgumentError("range() step must not be zero", call.args[2].span)
        loop.var_slot = self._slot(stmt.var)
        known = [self._static_number(v) for v in values]
        if all(k is not None for k in known):
            loop.bounds = tuple(known)
            return
        slots = [f"%range{next(self._calls)}" for _ in values]
        saved, self.items = self.items, []
        self._emit_segment(list(zip(slots, values, strict=True)))
        loop.header, self.items = (self.items[0] if self.items else None), saved
        loop.bounds = tuple(slots)

    def _check_carried(self, carried: set[str], entry: dict[str, Any]) -> None:
        for name in carried:
            if name not in self.env:  # rebound but never read again: nothing is carried
                continue
            before, after = entry[name].type, self.env[name].type
            if before != after:
                raise ShapeError(f"{name!r} is {_kind(before)} before the loop and {_kind(after)} after an "
                                 "iteration: a loop keeps the shape, dtype and storage of every name it rebinds "
                                 "(sparse() and dense() set a storage)",
                                 self.assign_lines.get(name))

    def _break(self, stmt: ast.Break) -> None:
        loops = self.frames[-1].loops
        if not loops:
            raise ResolveError("break outside a loop", stmt.span)
        self._end_block(loops[-1])
        self.items.append(BreakItem(stmt.span.line))

    # ------------------------------------------------------------ branches

    def _if(self, stmt: ast.If) -> None:
        cases = list(stmt.cases)
        while cases:
            cond, body = cases[0]
            known, _ = self._condition(cond, "if")
            if known is None:
                break
            if known:  # decided before the run: this branch is built in place, the rest only checked
                for _, other in cases[1:]:
                    self._checked_only(other.statements)
                if stmt.orelse is not None:
                    self._checked_only(stmt.orelse.statements)
                self._statements(body.statements)
                return
            self._checked_only(body.statements)
            cases.pop(0)
        if not cases:
            if stmt.orelse is not None:
                self._statements(stmt.orelse.statements)
            return
        self._dynamic_if(stmt, cases)

    def _dynamic_if(self, stmt: ast.If, cases: list) -> None:
        bodies = [body for _, body in cases] + ([stmt.orelse] if stmt.orelse else [])
        names = set().union(*(assigned(b.statements) for b in bodies))
        self._cut({n for n in names if isinstance(self.env.get(n), ir.Node)})
        entry = dict(self.env)
        after = (stmt.span.end_line, stmt.span.end_column + 1)
        live = self._reads(self.frames[-1]).live(after) | set().union(*self.frames[-1].loops)
        branch = Branch(source_text(cases[0][0]), stmt.span.line, [], span=cases[0][0].span)
        outcomes: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (env after, spans of its assignments)

        def build(body: ast.Block) -> list:
            self.env.clear()
            self.env.update(entry)
            spans_before = dict(self.assign_lines)
            items = self._block_keeping(body, live)
            outcomes.append((dict(self.env), {n: s for n, s in self.assign_lines.items()
                                              if spans_before.get(n) is not s}))
            return items

        for cond, body in cases:
            self.env.clear()
            self.env.update(entry)
            segment, slot = self._condition_segment(cond, "if")
            branch.cases.append((segment, slot, build(body)))
        if stmt.orelse is not None:
            branch.orelse = build(stmt.orelse)
        else:
            outcomes.append((dict(entry), {}))
        self.items.append(branch)
        self.env.clear()
        self.env.update(entry)
        self._join(names, entry, outcomes)

    def _block_keeping(self, body: ast.Block, live: set[str]) -> list:
        saved, self.items = self.items, []
        self._statements(body.statements)
        self._end_block({n for n in assigned(body.statements) if n in live and n in self.env})
        items, self.items = self.items, saved
        return items

    def _join(self, names: set[str], entry: dict[str, Any], outcomes) -> None:
        """After a branch: a name bound on every path is visible, with one type on all of them."""
        for name in sorted(names):
            values = [(env.get(name), spans.get(name)) for env, spans in outcomes]
            if any(not isinstance(v, ir.Node) for v, _ in values):
                line = next((s.line for v, s in values if v is not None and s is not None), 0)
                self.partial[name] = line
                continue
            first, _ = values[0]
            for value, span in values[1:]:
                if value.type != first.type:
                    raise ShapeError(f"{name!r} is {_kind(first.type)} on one path and {_kind(value.type)} on "
                                     "another: branches that bind a name give it one shape, dtype and storage",
                                     span or values[0][1])
            if isinstance(first, ir.Node) and (name not in entry or any(v is not entry.get(name) for v, _ in values)):
                self.env[name] = ir.Input(self._slot(name), first.type, name, span=first.span)
            self.partial.pop(name, None)

    # ------------------------------------------------------------ functions

    def _check_recursion(self, statements) -> None:
        """The call graph of the user functions (networkx): a cycle is recursion."""
        graph = nx.DiGraph()
        defs = [s for s in walk(statements) if isinstance(s, ast.Def)]
        for d in defs:
            graph.add_node(d.name)
            for stmt in walk(d.body.statements):
                for expr in statement_expressions(stmt):
                    for call in calls(expr):
                        if call.name in self.definitions:
                            graph.add_edge(d.name, call.name, span=call.name_span)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return
        path = " -> ".join([cycle[0][0], *(b for _, b in cycle)])
        raise ResolveError(f"recursion is not allowed: {path}", graph.edges[cycle[-1]]["span"])

    def _def(self, stmt: ast.Def) -> None:
        if id(stmt) not in self.top_defs:
            raise ResolveError("functions are defined at the top level of a program", stmt.span)
        if stmt.name in RESERVED:
            raise ResolveError(f"{stmt.name!r} is a built-in function or keyword; choose another name",
                               stmt.name_span)
        if stmt.name in self.functions:
            raise ResolveError(f"function {stmt.name!r} is defined twice", stmt.name_span)
        for index, (name, span) in enumerate(zip(stmt.params, stmt.param_spans, strict=True)):
            if name in stmt.params[:index]:
                raise ResolveError(f"{name!r} is named twice", span)
        returns = [s for s in walk(stmt.body.statements) if isinstance(s, ast.Return)]
        for ret in returns:
            if ret is not (stmt.body.statements[-1] if stmt.body.statements else None):
                raise ResolveError("return must be the last statement of a function body", ret.span)
        self.functions[stmt.name] = stmt

    def _return(self, stmt: ast.Return) -> None:
        frame = self.frames[-1]
        if frame.function is None:
            raise ResolveError("return outside a function", stmt.span)
        frame.returned = tuple(self.expr(v) for v in stmt.values)

    def user_function(self, name: str) -> ast.Def | None:
        return self.functions.get(name)

    def call_user(self, call: ast.Call, wanted: int | None) -> tuple:
        """Instantiate a user function at this call: its body built with the arguments bound.
        ``wanted``: how many values the caller takes (None: any). A function with blocks is
        only ever called from a statement of its own (see .call_hoist)."""
        fn = self.functions[call.name]
        if call.keywords:
            raise ArgumentError(f"{call.name}() takes its arguments by position", call.keywords[0].span)
        if len(call.args) != len(fn.params):
            raise ArgumentError(f"{call.name}() takes {len(fn.params)} argument{'s' * (len(fn.params) != 1)} "
                                f"({', '.join(fn.params)}), got {len(call.args)}", call.span)
        args = [self.expr(a) for a in call.args]
        env = {n: self.frames[0].env[n] for n in self.params}
        env.update(zip(fn.params, args, strict=True))
        frame = Frame(env, f"{call.name}#{next(self._calls)}/", None, fn.body.statements, function=fn)
        self.frames.append(frame)
        self.env = env
        try:
            self._statements(fn.body.statements)
        finally:
            self.frames.pop()
            self.env = self.frames[-1].env
        returned = frame.returned or ()
        if wanted is not None and len(returned) != wanted:
            gives = f"returns {len(returned)} value{'s' * (len(returned) != 1)}" if returned else "returns nothing"
            raise ResolveError(f"{call.name}() {gives}, {wanted} wanted here", call.span)
        return returned

    def unknown_call(self, call: ast.Call) -> None:
        later = self.definitions.get(call.name)
        if later is not None:
            raise ResolveError(f"{call.name}() is called before its definition (line {later.span.line})",
                               call.name_span)

    # ------------------------------------------------------------ the result

    def finish(self):
        if not self.has_flow:
            return None
        self._emit_segment([])
        return FlowProgram(self.items, tuple(self.params.items()), self.ast.source.name)


def _kind(t: ir.Type) -> str:
    if t.is_scalar:
        return "a scalar"
    return f"{t.shape[0]}x{t.shape[1]} {t.dtype}" + (" sparse" if t.is_sparse else "")


_STATEMENTS: dict[type, Any] = {}


def register(statements: dict[type, Any]) -> None:
    _STATEMENTS.update(statements)


register({
    ast.For: BlockStatements._loop,
    ast.While: BlockStatements._loop,
    ast.If: BlockStatements._if,
    ast.Break: BlockStatements._break,
    ast.Def: BlockStatements._def,
    ast.Return: BlockStatements._return,
})
