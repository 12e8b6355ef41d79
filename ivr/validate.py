"""Validation of an IVR flow document on save: every problem, each with its node id (the API answers 422).

Each node is validated on its own, so one broken node does not hide the problems of the others; then the
graph is checked: the start node exists, every target names a node, every node is reachable from the start,
no cycle runs without waiting for the caller, every node can reach a terminal node (queue, transfer, message,
hangup), and referenced variables are set somewhere. Context checks (URL host allow-list, known queues,
prompts and transfer targets) use the ``ValidationContext`` the caller passes in. Pure code, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ivr.flow_model import (
    BUILTIN_VARS,
    NODE_ID_PATTERN,
    NODE_TYPES,
    TARGET_FIELDS,
    TARGET_MAPS,
    Flow,
    HttpLookupNode,
    Node,
    NodeBase,
    QueueNode,
    TransferNode,
)

_NODE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Node)


@dataclass(frozen=True)
class Problem:
    node: str | None
    field: str | None
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {"node": self.node, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class ValidationContext:
    """What the flow may refer to. ``None`` for queues/prompts/transfer targets means "don't check"."""

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    known_queues: frozenset[str] | None = None
    known_prompts: frozenset[str] | None = None
    known_transfer_targets: frozenset[str] | None = None  # extensions and numbers, as written in the node


def _loc(loc: Iterable[int | str]) -> str | None:
    parts = [str(p) for p in loc if p != "[key]"]
    return ".".join(parts) or None


def _node_errors(node_id: str, exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            out.append(Problem(node_id, "type", f"unknown node type {tag!r}; expected one of "
                                                f"{', '.join(NODE_TYPES)}"))
            continue
        if err["type"] == "union_tag_not_found":
            out.append(Problem(node_id, "type", "missing node type"))
            continue
        if err["type"] == "model_attributes_type" or (err["type"] == "dict_type" and not loc):
            out.append(Problem(node_id, None, "a node must be an object"))
            continue
        if loc and isinstance(loc[0], str) and loc[0] in NODE_TYPES:
            loc = loc[1:]  # the discriminator tag pydantic puts first
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error" and len(loc) >= 2 and loc[-1] == "[key]":
            if loc[0] == "hours":
                msg = f"bad weekday {loc[-2]!r}: use mon, tue, wed, thu, fri, sat or sun"
            else:
                msg = f"bad digit key {loc[-2]!r}: use 0-9, * or #"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        out.append(Problem(node_id, _loc(loc), msg))
    return out


def _raw_targets(raw: Any) -> list[tuple[str, str]]:
    """Best-effort edges of a node that failed validation, so it does not make its successors look unreachable."""
    if not isinstance(raw, dict):
        return []
    out = [(f, raw[f]) for f in TARGET_FIELDS if isinstance(raw.get(f), str)]
    for m in TARGET_MAPS:
        if isinstance(raw.get(m), dict):
            out += [(f"{m}.{k}", v) for k, v in raw[m].items() if isinstance(v, str)]
    return out


def validate_flow(doc: Any, ctx: ValidationContext) -> tuple[Flow | None, list[Problem]]:
    """The parsed flow (None if there is any problem) and every problem found."""
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        return None, [Problem(None, None, "a flow must be an object with start and nodes")]
    for key in doc:
        if key not in ("start", "nodes"):
            problems.append(Problem(None, str(key), "unknown field"))
    start = doc.get("start")
    if start is None:
        problems.append(Problem(None, "start", "field required"))
    elif not isinstance(start, str) or not re.match(NODE_ID_PATTERN, start):
        problems.append(Problem(None, "start", "start must be a node id"))
        start = None
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        problems.append(Problem(None, "nodes", "nodes must be a non-empty object of node id -> node"))
        return None, problems
    if len(raw_nodes) > 500:
        problems.append(Problem(None, "nodes", "at most 500 nodes"))
        return None, problems

    nodes: dict[str, NodeBase] = {}
    edges: dict[str, list[tuple[str, str]]] = {}
    broken: set[str] = set()  # nodes that failed validation: unknown kind, neither input nor terminal
    for node_id, raw in raw_nodes.items():
        if not isinstance(node_id, str) or not re.match(NODE_ID_PATTERN, node_id):
            problems.append(Problem(str(node_id)[:64], None,
                                    "bad node id: lower-case letters, digits, _ and -, max 64, start alnum"))
            continue
        try:
            node = _NODE_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            problems += _node_errors(node_id, exc)
            broken.add(node_id)
            edges[node_id] = _raw_targets(raw)
            continue
        nodes[node_id] = node
        edges[node_id] = node.targets()

    # Context checks.
    for node_id, node in nodes.items():
        if ctx.known_prompts is not None:
            for f, prompt in node.prompts():
                if prompt not in ctx.known_prompts:
                    problems.append(Problem(node_id, f, f"unknown prompt {prompt!r}"))
        if isinstance(node, HttpLookupNode) and node.host not in {h.lower() for h in ctx.allowed_hosts}:
            problems.append(Problem(node_id, "url", f"host {node.host!r} is not in the allowed hosts"))
        if isinstance(node, QueueNode) and ctx.known_queues is not None and node.queue not in ctx.known_queues:
            problems.append(Problem(node_id, "queue", f"unknown queue {node.queue!r}"))
        if isinstance(node, TransferNode) and ctx.known_transfer_targets is not None:
            target = node.extension if node.extension is not None else node.number
            if target not in ctx.known_transfer_targets:
                f = "extension" if node.extension is not None else "number"
                problems.append(Problem(node_id, f, f"transfer target {target!r} is not allowed"))

    # Variables read must be set somewhere (or be built in).
    defined = set(BUILTIN_VARS)
    for node in nodes.values():
        defined.update(node.var_defs())
    for node_id, node in nodes.items():
        for f, var in node.var_refs():
            if var not in defined:
                problems.append(Problem(node_id, f, f"variable {var!r} is never set in this flow"))

    # Graph: start, dangling targets.
    all_ids = set(edges)
    if start is not None and start not in all_ids:
        problems.append(Problem(None, "start", f"start names no node: {start!r}"))
    dangling: set[str] = set()
    for node_id, outs in edges.items():
        for f, target in outs:
            if target not in all_ids:
                dangling.add(node_id)
                problems.append(Problem(node_id, f, f"target {target!r} names no node"))

    # Unreachable nodes.
    if start in all_ids:
        seen = {start}
        todo = [start]
        while todo:
            for _, t in edges[todo.pop()]:
                if t in all_ids and t not in seen:
                    seen.add(t)
                    todo.append(t)
        for node_id in sorted(all_ids - seen):
            problems.append(Problem(node_id, None, f"unreachable from start node {start!r}"))

    # Loops with no caller input: cycles in the graph of nodes that never wait for the caller.
    quiet = {n for n, node in nodes.items() if not node.WAITS_FOR_INPUT}
    quiet_edges = {n: sorted({t for _, t in edges[n] if t in quiet}) for n in quiet}
    for cycle in _cycles(quiet_edges):
        first = min(cycle)
        problems.append(Problem(first, None, "loop with no caller input: " + " -> ".join([*cycle, cycle[0]])))

    # Every node must be able to reach a terminal node (nodes already reported broken/dangling count as ok,
    # so one mistake is not reported over and over).
    ok = {n for n, node in nodes.items() if node.TERMINAL} | broken | dangling
    reverse: dict[str, set[str]] = {n: set() for n in all_ids}
    for n, outs in edges.items():
        for _, t in outs:
            if t in reverse:
                reverse[t].add(n)
    todo = list(ok)
    while todo:
        for p in reverse[todo.pop()]:
            if p not in ok:
                ok.add(p)
                todo.append(p)
    for node_id in sorted(all_ids - ok):
        problems.append(Problem(node_id, None, "no path from this node reaches a queue, transfer, message or "
                                               "hangup node"))

    if problems:
        return None, problems
    return Flow.model_validate({"start": start, "nodes": nodes}, strict=False), []


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component that contains a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                sccs.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    out = []
    for comp in sccs:
        members = set(comp)
        path = [min(comp)]
        while True:  # follow edges inside the component until we come back
            nxt = next(w for w in graph[path[-1]] if w in members)
            if nxt in path:
                out.append(path[path.index(nxt):])
                break
            path.append(nxt)
    return out
