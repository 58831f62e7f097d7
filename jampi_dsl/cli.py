"""``jampi run | explain | check``. Exit codes: 0 ok, 2 the program or its inputs
are wrong (with file:line:col and a caret), 1 a failure while running."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import nullcontext
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from . import __version__, api, sparse
from .errors import JampiError, ResolveError
from .executors.base import RunContext
from .executors.flow import execute
from .executors.runner import RunResult, node_name, short_name
from .planner import explain as explain_mod
from .planner import ir
from .planner.build import ParamValue, parse_param_override
from .planner.flow import FlowPlan
from .planner.methods import DISTRIBUTED
from .planner.passes import dropped_names
from .planner.physical import FORCEABLE, PhysicalPlan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jampi", description="Run .lin linear-algebra programs on NumPy or Spark.")
    parser.add_argument("--version", action="version", version=f"jampi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, spark: bool = True) -> None:
        p.add_argument("program", help="the .lin file")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                       help="override a declared parameter (repeatable)")
        if spark:
            p.add_argument("--master", help="Spark master URL (default: an embedded local Spark)")
            p.add_argument("--conf", dest="confs", action="append", default=[], metavar="KEY=VALUE",
                           help="Spark configuration (repeatable)")
            p.add_argument("--executor", choices=FORCEABLE, default="auto",
                           help="force the matrix-product method (default: the planner chooses)")

    run = sub.add_parser("run", help="run a program")
    common(run)
    run.add_argument("--quiet", action="store_true", help="no progress or summary, only what the program prints")
    run.add_argument("--json", action="store_true", help="print outputs and timings as JSON on stdout")
    run.add_argument("--verbose", action="store_true",
                     help="Spark's own start-up notices, and on a failure the whole chain of causes "
                          "(also JAMPI_VERBOSE=1)")
    explain = sub.add_parser("explain", help="show the plan: every node's method and why")
    common(explain)
    explain.add_argument("--format", choices=("text", "json", "dot"), default="text")
    check = sub.add_parser("check", help="parse and check names and shapes; run nothing")
    common(check, spark=False)
    return parser


def _overrides(sets: list[str]) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for text in sets:
        name, value = parse_param_override(text)
        if name in out:
            raise ResolveError(f"--set {name} is given twice", value.span)
        out[name] = value
    return out


def _confs(confs: list[str]) -> dict[str, str]:
    out = {}
    for text in confs:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ResolveError(f"--conf needs KEY=VALUE, got {text!r}")
        out[key.strip()] = value.strip()
    return out


def _plan(args) -> PhysicalPlan:
    resources = api.resources_for(args.master, _confs(args.confs))
    return api.plan_file(args.program, _overrides(args.sets), resources, args.executor)


def _spark_factory(args):
    def start():
        from .session import spark_for_plans

        return spark_for_plans(args.master, _confs(args.confs))

    return start


def _summary(plan: PhysicalPlan, result: RunResult, total: float) -> Table:
    # A step of a loop body runs once per iteration: one row per step, with its count and total time.
    rows: dict[int, list] = {}
    for timing in result.timings:
        row = rows.setdefault(timing.step.node.uid, [timing.step, 0, 0.0])
        row[1] += 1
        row[2] += timing.seconds
    repeated = any(count > 1 for _, count, _ in rows.values())
    title = f"ran {len(rows)} nodes in {total:.2f} s"
    if repeated:
        title = f"ran {len(rows)} nodes {len(result.timings)} times in {total:.2f} s"
    table = Table(title=title, title_justify="left")
    columns = ("node", "method", "shape", *(("runs",) if repeated else ()), "est. s", "s")
    for column in columns:
        table.add_column(column, justify="right" if column.endswith("s") and column != "shape" else "left")
    for step, count, seconds in rows.values():
        if repeated and isinstance(step.node, (ir.Const, ir.Input)):
            continue  # a loop's constants and inputs: noise in a table of work
        est = f"{step.estimate.seconds:.3f}" if step.estimate else "-"
        table.add_row(
            short_name(plan, step), step.method + (" (forced)" if step.forced else ""),
            str(step.node.type) if step.node.type.kind != "output" else "",
            *((str(count),) if repeated else ()), est, f"{seconds:.3f}",
        )
    return table


JSON_MAX_ENTRIES = 10_000  # a matrix this small comes with its values; a larger one with its shape only


def _json_value(value: Any) -> Any:
    if sparse.is_sparse(value):  # stored entries as [i, j, v] triples
        coo = value.tocoo()
        doc = {"shape": list(value.shape), "dtype": str(value.dtype), "storage": "sparse", "nnz": int(value.nnz)}
        if value.nnz <= JSON_MAX_ENTRIES:
            doc["entries"] = [[int(i), int(j), float(v)] for i, j, v in zip(coo.row, coo.col, coo.data, strict=True)]
        return doc
    if isinstance(value, np.ndarray):
        doc: dict[str, Any] = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if value.size <= JSON_MAX_ENTRIES:
            doc["values"] = value.tolist()  # floats round-trip exactly through JSON's repr
        return doc
    return value


def _run(args, out: Console, err: Console) -> int:
    if args.verbose:  # Spark's own start-up notices too (planning may start Spark: set before it)
        from .driver_jvm import show_spark_output

        show_spark_output()
    plan = _plan(args)
    if not plan.program.outputs:
        if not args.json:
            err.print("[yellow]nothing to compute: the program saves and prints nothing[/yellow]")
        else:
            print(json.dumps({"outputs": [], "timings": []}))
        return 0
    printer = None if args.json else (lambda text: out.print(text, markup=False, highlight=False))
    ctx = RunContext(on_print=printer, spark_factory=_spark_factory(args))
    started = time.perf_counter()
    show_progress = not (args.quiet or args.json)
    spark_seconds = None
    if plan.methods_used & DISTRIBUTED:
        # Start Spark up front so its start-up is not billed to the first distributed node.
        with err.status("starting Spark") if show_progress else nullcontext():
            ctx.get_spark()
        spark_seconds = time.perf_counter() - started
    if show_progress:
        result = _execute_with_progress(plan, ctx, err)
    else:
        result = execute(plan, ctx)
    total = time.perf_counter() - started
    if args.json:
        doc = {
            "outputs": [{"kind": o.kind, "label": o.label, "value": _json_value(o.value)} for o in result.outputs],
            "timings": [{"node": node_name(plan, t.step), "method": t.step.method, "seconds": t.seconds,
                         "estimated_seconds": t.step.estimate.seconds if t.step.estimate else None}
                        for t in result.timings],
            "seconds": total,
        }
        print(json.dumps(doc, indent=2))
    elif show_progress:
        for output in result.outputs:
            if output.kind == "save":
                err.print(f"saved {output.label}")
        if spark_seconds is not None:
            err.print(f"Spark started in {spark_seconds:.2f} s")
        err.print(_summary(plan, result, total))
    return 0


class _StepColumn(ProgressColumn):
    """The running step, its method, how long it has run and how long the plan expects it to:
    a long Cannon stage shows its clock moving instead of a bar that seems frozen."""

    def __init__(self, current: dict):
        super().__init__()
        self.current = current

    def render(self, task) -> Text:
        step, began = self.current.get("step"), self.current.get("began")
        if step is None:
            return Text("starting")
        est = f" / ~{step.estimate.seconds:.1f}s" if step.estimate else ""
        return Text(f"{self.current['name']} [{step.method}] {time.perf_counter() - began:.1f}s{est}")


def loop_status(loop, iteration: int, values: dict) -> str:
    """``while diff > tol`` at line 12 → ``line 12 · iteration 37 · diff 3.2e-09``."""
    shown = " · ".join(f"{name} {value:.3g}" for name, value in values.items() if isinstance(value, float))
    return f"line {loop.line} · iteration {iteration}" + (f" · {shown}" if shown else "")


def _execute_flow_with_progress(plan: FlowPlan, ctx: RunContext, err: Console) -> RunResult:
    """A program with loops has no known length: the running step, and the loop's iteration
    with the latest values of the scalars its condition reads."""
    current: dict = {}
    columns = (_StepColumn(current), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, refresh_per_second=4) as progress:
        task = progress.add_task("", total=None)

        def started(step):
            current.update(step=step, began=time.perf_counter(), name=short_name(plan, step)[:24])

        def looping(loop, iteration, values):
            progress.update(task, description=loop_status(loop, iteration, values))

        return execute(plan, ctx, on_start=started, on_loop=looping)


def _execute_with_progress(plan: PhysicalPlan, ctx: RunContext, err: Console) -> RunResult:
    """Progress by the plan's estimated seconds, not by step count (one product may be most of
    the run), with the time left as the estimates and the pace so far give it."""
    if isinstance(plan, FlowPlan):
        return _execute_flow_with_progress(plan, ctx, err)
    weights = [max(step.estimate.seconds if step.estimate else 0.0, 1e-3) for step in plan.steps]
    current: dict = {}
    columns = (_StepColumn(current), BarColumn(bar_width=16), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, refresh_per_second=4) as progress:
        task = progress.add_task("run", total=sum(weights))
        index = {step.node.uid: i for i, step in enumerate(plan.steps)}

        def started(step):
            current.update(step=step, began=time.perf_counter(), name=short_name(plan, step)[:24])

        def done(step, seconds):
            progress.advance(task, weights[index[step.node.uid]])

        return execute(plan, ctx, on_start=started, on_done=done)


def _explain(args, out: Console) -> int:
    plan = _plan(args)
    if args.format == "json":
        print(explain_mod.to_json(plan))
    elif args.format == "dot":
        print(explain_mod.to_dot(plan), end="")
    else:
        # As wide as the longest line: the reasons and runner-ups are the point, never cut them.
        Console(highlight=False, width=4096).print(explain_mod.to_text_tree(plan))
    return 0


def _check(args, out: Console) -> int:
    """Everything but running: names, shapes, files and the planner's verdicts (a product too
    big for any method is refused here as it would be by run), on the embedded default's
    resources, without starting Spark."""
    plan = api.plan_file(args.program, _overrides(args.sets), api.resources_for(None, {}))
    optimized = plan.program
    out.print(f"{args.program}: ok — {len(optimized.outputs)} output(s), {len(plan.steps)} node(s) after rewrites",
              highlight=False)
    dead = dropped_names(optimized)
    if dead:
        out.print(f"unused (dropped): {', '.join(dead)}", highlight=False)
    if not optimized.outputs:
        out.print("[yellow]warning: nothing is saved or printed; run would compute nothing[/yellow]")
    return 0


class _Stdout(Console):
    """Standard output whose reader may go away (`jampi run ... | head`): what it wanted it has,
    so the run goes on writing to nowhere and its saves still commit (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is so a run unwinds as it does for Ctrl-C:
    staged outputs are discarded and Spark is stopped, instead of dying mid-write."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    verbose = getattr(args, "verbose", False) or bool(os.environ.get("JAMPI_VERBOSE"))
    if not verbose and not logging.getLogger().handlers:
        # py4j logs an interrupted call's tracebacks on the root logger (Ctrl-C mid-job): the
        # user gets the one line below instead; --verbose keeps them.
        logging.getLogger().addHandler(logging.NullHandler())
    out = _Stdout(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        if args.command == "run":
            return _run(args, out, err)
        if args.command == "explain":
            return _explain(args, out)
        return _check(args, out)
    except JampiError as error:
        print(error.render(), file=sys.stderr)
        if error.__cause__ is not None and (getattr(args, "verbose", False) or os.environ.get("JAMPI_VERBOSE")):
            print("".join(traceback.format_exception(error.__cause__)), file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        # The reader went away (`jampi run ... | head`): what it wanted it has; stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        _stop_spark_quietly()
        print("interrupted: nothing was saved", file=sys.stderr)
        return 130
    except Terminated:
        _stop_spark_quietly()
        print("terminated: nothing was saved", file=sys.stderr)
        return 143


def _stop_spark_quietly() -> None:
    """After an interrupt: cancel what runs and stop Spark with its log off, so its executors
    do not print a stack trace per killed task after the command has said it stopped."""
    if "pyspark" not in sys.modules:
        return
    from .spark_internals import active_context

    sc = active_context()
    if sc is None:
        return
    try:
        sc.setLogLevel("OFF")
        sc.cancelAllJobs()
        sc.stop()
    except Exception:  # noqa: BLE001 - the JVM may be going down already; the exit code stands
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
