"""``explain``: what the planner chose for every node and why, as a rich tree,
as JSON (a stable, documented schema) or as Graphviz dot coloured by method."""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from . import ir
from .cost import Estimate
from .flow import Branch, BreakItem, FlowPlan, FlowProgram, Loop, Segment
from .graph import describe
from .lifetimes import is_lazy
from .methods import DISTRIBUTED
from .physical import PhysicalPlan, Step

METHOD_COLOURS = {"local": "#8ecae6", "cannon": "#ffb703", "broadcast": "#90be6d", "mllib": "#e76f51"}
JSON_SCHEMA_VERSION = 1


def _refs(plan: PhysicalPlan) -> dict[int, str]:
    """A readable handle per node: its bound name (an input: the name it had), else %k in plan order."""
    names = plan.program.names()
    refs: dict[int, str] = {}
    for index, step in enumerate(plan.steps):
        node = step.node
        refs[node.uid] = names.get(node.uid) or (node.name if isinstance(node, ir.Input) else f"%{index}")
    return refs


def _node_text(step: Step, refs: dict[int, str]) -> str:
    text = describe(step.node, lambda n: refs[n.uid])
    if isinstance(step.node, ir.OUTPUT_NODES):
        return text
    return f"{refs[step.node.uid]} = {text}"


def _runner_up_text(step: Step) -> str:
    if step.runner_up is None:
        return ""
    name, detail = step.runner_up
    return f"{name}: {detail.short()}" if isinstance(detail, Estimate) else f"{name}: {detail}"


def _lifetime_text(plan: PhysicalPlan, step: Step, refs: dict[int, str]) -> str:
    """Where a distributed value lives: kept on the executors, or computed by its reader's job."""
    life = step.lifetime
    last = plan.steps[life.release_after].node
    kept = "lazy" if is_lazy(step) else "materialised"
    if last is step.node:
        return f"{kept}, released after its own step"
    return f"{kept}, released after {refs[last.uid]}"


def _header(plan, rewrites: str) -> Tree:
    tree = Tree(Text.assemble(("plan ", "bold"), (plan.program.source_name, "cyan")))
    tree.add(Text(f"rewrites applied: {rewrites}", style="dim"))
    res = plan.resources
    where = f"Spark {res.master}, {res.slots} slots" if res.spark else "no Spark (local only)"
    tree.add(Text(f"resources: {where}; driver budget {res.driver_budget / 2**30:.1f} GiB", style="dim"))
    return tree


def to_text_tree(plan: PhysicalPlan) -> Tree:
    if isinstance(plan, FlowPlan):
        return _flow_tree(plan)
    program = plan.program
    tree = _header(plan, ", ".join(program.applied) or "none")
    outputs = tree.add(Text("outputs", style="bold"))
    if not program.outputs:
        outputs.add(Text("nothing is saved or printed: run computes nothing", style="yellow"))
    _add_outputs(outputs, plan)
    return tree


def _add_outputs(outputs: Tree, plan: PhysicalPlan) -> None:
    """Each output of ``plan`` with the nodes it reads, depth first."""
    refs = _refs(plan)
    shown: set[int] = set()

    def add(parent: Tree, root: ir.Node) -> None:
        # Depth first with an explicit stack: a chain of thousands of operators must not
        # exhaust Python's recursion limit.
        stack = [(parent, root)]
        while stack:
            branch_parent, node = stack.pop()
            step = plan.step(node)
            label = Text()
            label.append(_node_text(step, refs), style="bold")
            if node.type.kind != "output":
                label.append(f"  {node.type}", style="green")
            colour = METHOD_COLOURS.get(step.method, "white")
            label.append(f"  [{step.method}{' forced' if step.forced else ''}]", style=colour)
            if node.uid in shown:
                label.append("  (shown above)", style="dim")
                branch_parent.add(label)
                continue
            shown.add(node.uid)
            if not isinstance(node, ir.Const):
                why = step.reason
                if step.runner_up is not None and not step.reason.startswith(("cheapest", "only method that")):
                    why += f"; runner-up {_runner_up_text(step)}"
                label.append(f"  {why}", style="dim")
            if step.method in DISTRIBUTED and node.type.is_matrix:
                label.append(f"  [{_lifetime_text(plan, step, refs)}]", style="magenta")
            branch = branch_parent.add(label)
            stack.extend((branch, child) for child in reversed(node.children))

    for output in plan.program.outputs:
        add(outputs, output)


# ---------------------------------------------------------------- programs with blocks


def _per_iteration(items: list) -> float:
    """The estimated seconds of one pass over ``items`` (a nested loop counted once)."""
    plans = [s.plan for s in FlowProgram(items).segments()]
    return sum(step.estimate.seconds for plan in plans for step in plan.steps if step.estimate)


def _flow_tree(plan: FlowPlan) -> Tree:
    applied = sorted({name for p in plan.plans() for name in p.program.applied})
    tree = _header(plan, ", ".join(applied) or "none")
    if not plan.program.outputs:
        tree.add(Text("nothing is saved or printed: run computes nothing", style="yellow"))
    _flow_items(tree.add(Text("program", style="bold")), plan.flow.body)
    return tree


def _flow_items(parent: Tree, items: list) -> None:
    for item in items:
        if isinstance(item, Segment):
            label = item.label or "straight-line part"
            exports = ", ".join(item.exported_slots())
            text = Text(label, style="bold")
            if exports:
                text.append(f"  keeps {exports}", style="dim")
            _add_outputs(parent.add(text), item.plan)
        elif isinstance(item, Loop):
            text = Text(f"{item.text}  (line {item.line})", style="bold yellow")
            text.append(f"  per iteration ~{_per_iteration(item.body):.3g} s; planned once, not unrolled",
                        style="dim")
            branch = parent.add(text)
            for hoisted in item.hoisted:
                branch.add(Text(f"hoisted before the loop: {hoisted}", style="magenta"))
            for part, what in ((item.header, "range bounds"), (item.cond, "condition, before each iteration")):
                if part is not None:
                    _add_outputs(branch.add(Text(what, style="bold")), part.plan)
            _flow_items(branch, item.body)
        elif isinstance(item, Branch):
            branch = parent.add(Text(f"if {item.text}  (line {item.line}), decided at run time", style="bold yellow"))
            for index, (cond, _slot, body) in enumerate(item.cases):
                case = branch.add(Text("if" if index == 0 else "else if", style="bold"))
                _add_outputs(case.add(Text("condition", style="bold")), cond.plan)
                _flow_items(case, body)
            if item.orelse is not None:
                _flow_items(branch.add(Text("else", style="bold")), item.orelse)
        elif isinstance(item, BreakItem):
            parent.add(Text(f"break  (line {item.line})", style="bold yellow"))


def _flow_dict(items: list) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, Segment):
            out.append({"kind": "segment", "label": item.label, "keeps": item.exported_slots(),
                        **to_dict(item.plan)})
        elif isinstance(item, Loop):
            out.append({"kind": "loop", "header": item.text, "line": item.line, "hoisted": list(item.hoisted),
                        "per_iteration_seconds": _per_iteration(item.body),
                        "bounds": [b for b in item.bounds],
                        "range": _flow_dict([item.header]) if item.header else None,
                        "condition": _flow_dict([item.cond]) if item.cond else None,
                        "body": _flow_dict(item.body)})
        elif isinstance(item, Branch):
            out.append({"kind": "if", "condition_text": item.text, "line": item.line,
                        "cases": [{"condition": _flow_dict([c])[0], "body": _flow_dict(b)} for c, _s, b in item.cases],
                        "else": _flow_dict(item.orelse) if item.orelse is not None else None})
        elif isinstance(item, BreakItem):
            out.append({"kind": "break", "line": item.line})
    return out


def to_text(plan: PhysicalPlan, width: int = 120) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(to_text_tree(plan))
    return console.file.getvalue()


def to_dict(plan: PhysicalPlan) -> dict[str, Any]:
    """The JSON form. Schema (version 1): {version, program, rewrites[], resources{}, outputs[ids],
    nodes[{id, name, op, text, kind, shape, dtype, inputs[ids], method, forced, reason,
    estimate{seconds, flops, bytes_moved, task_memory, stages} | null, runner_up{method, estimate|reason} | null,
    lifetime{materialize, release_after: id}, physical{grid, block, ships}}]}: ``physical`` holds what
    a product's executor takes from the plan (a Cannon step's grid side and result block, the
    operand a broadcast step ships); ``materialize`` true when the value is computed once
    and kept on the executors (memory, then disk), ``release_after`` the node after which it is freed."""
    if isinstance(plan, FlowPlan):
        return {"version": JSON_SCHEMA_VERSION, "program": plan.program.source_name, "flow": _flow_dict(plan.flow.body)}
    refs = _refs(plan)
    ids = {step.node.uid: index for index, step in enumerate(plan.steps)}
    nodes = []
    for step in plan.steps:
        node = step.node
        runner_up = None
        if step.runner_up is not None:
            name, detail = step.runner_up
            runner_up = {"method": name}
            if isinstance(detail, Estimate):
                runner_up["estimate"] = detail.as_dict()
            else:
                runner_up["reason"] = detail
        nodes.append(
            {
                "id": ids[node.uid],
                "name": None if refs[node.uid].startswith("%") else refs[node.uid],
                "op": node.op,
                "text": describe(node, lambda n: refs[n.uid]),
                "kind": node.type.kind,
                "shape": list(node.type.shape) if node.type.shape else None,
                "dtype": node.type.dtype if node.type.kind == "matrix" else None,
                "inputs": [ids[c.uid] for c in node.children],
                "method": step.method,
                "forced": step.forced,
                "reason": step.reason,
                "estimate": step.estimate.as_dict() if step.estimate else None,
                "runner_up": runner_up,
                "lifetime": {"materialize": step.lifetime.materialize,
                             "release_after": step.lifetime.release_after},
                "physical": {k: v for k, v in (("grid", step.grid), ("block", list(step.block or ()) or None),
                                               ("ships", step.ships), ("collect", step.collect or None))
                             if v is not None},
            }
        )
    res = plan.resources
    return {
        "version": JSON_SCHEMA_VERSION,
        "program": plan.program.source_name,
        "rewrites": list(plan.program.applied),
        "resources": {
            "spark": res.spark,
            "master": res.master,
            "slots": res.slots,
            "task_cpus": res.task_cpus,
            "dynamic_allocation": res.dynamic_allocation,
            "driver_budget": res.driver_budget,
        },
        "outputs": [ids[o.uid] for o in plan.program.outputs],
        "nodes": nodes,
    }


def to_json(plan: PhysicalPlan) -> str:
    return json.dumps(to_dict(plan), indent=2)


def to_dot(plan: PhysicalPlan) -> str:
    lines = ["digraph plan {", '  rankdir=BT;', '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    if isinstance(plan, FlowPlan):  # one cluster per segment, in program order
        for index, segment in enumerate(plan.flow.segments()):
            lines.append(f'  subgraph cluster_{index} {{')
            lines.append(f'    label="{(segment.label or f"part {index}").replace(chr(34), "")}";')
            lines.extend("  " + line for line in _dot_nodes(segment.plan, f"s{index}_"))
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"
    lines.extend(_dot_nodes(plan, ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_nodes(plan: PhysicalPlan, prefix: str) -> list[str]:
    refs = _refs(plan)
    lines = []
    for index, step in enumerate(plan.steps):
        node = step.node
        label = describe(node, lambda n: refs[n.uid]).replace('"', '\\"')
        if node.type.kind != "output":
            label = f"{refs[node.uid]} = {label}\\n{node.type}"
        label += f"\\n[{step.method}{' forced' if step.forced else ''}]"
        colour = METHOD_COLOURS.get(step.method, "#dddddd")
        lines.append(f'  {prefix}n{index} [label="{label}", fillcolor="{colour}"];')
    ids = {step.node.uid: index for index, step in enumerate(plan.steps)}
    for step in plan.steps:
        for child in step.node.children:
            lines.append(f"  {prefix}n{ids[child.uid]} -> {prefix}n{ids[step.node.uid]};")
    return lines
