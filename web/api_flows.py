"""REST for IVR flows: drafts, validation (every problem with its node id), publish, rollback, simulate.

A flow is validated on every save: a draft with problems is refused with 422 and the full list, so what can
be published is always runnable. Publishing copies the draft into a new immutable version; the next call
runs it (no Asterisk reload is involved: the FastAGI IVR reads the published version per call).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ivr.flow_store import FlowError, FlowStore
from ivr.simulate import simulate
from ivr.validate import Problem, ValidationContext, validate_flow
from web.auth import Handler, guard, principal
from web.errors import error

K_FLOWS = web.AppKey("flow_store", FlowStore)
ContextFactory = Callable[[], Awaitable[ValidationContext]]
K_FLOW_CONTEXT: web.AppKey[ContextFactory] = web.AppKey("flow_context")

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")



def _problems(problems: list[Problem]) -> web.Response:
    listed = [asdict(p) for p in problems]
    summary = "; ".join(f"{p.node or 'flow'}: {p.message}" for p in problems[:10])
    return error(422, "invalid_flow", summary, problems=listed)


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        data = json.loads(await request.read() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error(400, "bad_request", "request body is not valid JSON")
    if not isinstance(data, dict):
        return error(400, "bad_request", "request body must be a JSON object")
    return data


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 64 and name[0].isalnum() and set(name) <= NAME_CHARS


async def _check(request: web.Request, document: object) -> list[Problem] | None:
    if not isinstance(document, dict):
        return [Problem(None, "document", "must be a JSON object")]
    ctx = await request.app[K_FLOW_CONTEXT]()
    _, problems = validate_flow(document, ctx)
    return problems or None


def flow_handler(run: Callable[[web.Request, FlowStore], Awaitable[Any]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            out = await run(request, request.app[K_FLOWS])
        except FlowError as exc:
            code = {404: "not_found", 409: "conflict"}.get(exc.status, "bad_request")
            return error(exc.status, code, str(exc))
        return out if isinstance(out, web.StreamResponse) else web.json_response(out)
    return handler


async def list_flows(request: web.Request, store: FlowStore) -> Any:
    return await store.list()


async def create_flow(request: web.Request, store: FlowStore) -> Any:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    if not _valid_name(body.get("name")):
        return error(422, "invalid", "name: lower-case letters, digits, _ and - (1-64)",
                    problems=[{"node": None, "field": "name", "message": "invalid name"}])
    problems = await _check(request, body.get("document"))
    if problems:
        return _problems(problems)
    return web.json_response(await store.create(body["name"], body["document"]), status=201)


async def get_flow(request: web.Request, store: FlowStore) -> Any:
    return await store.get(request.match_info["name"])


async def save_draft(request: web.Request, store: FlowStore) -> Any:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    problems = await _check(request, body.get("document"))
    if problems:
        return _problems(problems)
    return await store.save_draft(request.match_info["name"], body["document"])


async def delete_flow(request: web.Request, store: FlowStore) -> Any:
    await store.delete(request.match_info["name"])
    return web.Response(status=204)


async def validate(request: web.Request, store: FlowStore) -> Any:
    """Check a document (or the stored draft) without saving: 200 with `ok` and the problems."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    document = body["document"] if "document" in body else (await store.get(request.match_info["name"]))["draft"]
    problems = await _check(request, document) or []
    return {"ok": not problems, "problems": [asdict(p) for p in problems]}


async def publish(request: web.Request, store: FlowStore) -> Any:
    draft = (await store.get(request.match_info["name"]))["draft"]
    problems = await _check(request, draft)  # the context (queues, hosts) may have changed since the save
    if problems:
        return _problems(problems)
    version = await store.publish(request.match_info["name"], draft, principal(request).name)
    return {"name": request.match_info["name"], "published_version": version}


async def rollback(request: web.Request, store: FlowStore) -> Any:
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return error(422, "invalid", "version: a published version number",
                    problems=[{"node": None, "field": "version", "message": "a positive integer"}])
    await store.rollback(request.match_info["name"], version)
    return {"name": request.match_info["name"], "published_version": version}


async def get_version(request: web.Request, store: FlowStore) -> Any:
    try:
        number = int(request.match_info["version"])
    except ValueError:
        return error(422, "invalid", "version: a number")
    v = await store.version(request.match_info["name"], number)
    return {"name": v.flow, "version": v.version, "document": v.document}


async def simulate_path(request: web.Request, store: FlowStore) -> Any:
    """Walk a flow with given caller inputs and no call: the draft, or a version (`"version": n`)."""
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    inputs = body.get("inputs", [])
    if not isinstance(inputs, list) or len(inputs) > 50 or not all(
            isinstance(i, str) and len(i) <= 32 and set(i) <= set("0123456789*#") for i in inputs):
        return error(422, "invalid", "inputs: up to 50 strings of DTMF digits (\"\" = no input)",
                    problems=[{"node": None, "field": "inputs", "message": "DTMF digits only"}])
    try:
        now = datetime.fromisoformat(body["now"]) if "now" in body else datetime.now(UTC)
    except (TypeError, ValueError):
        return error(422, "invalid", "now: an ISO 8601 instant with a time zone")
    if now.tzinfo is None:
        return error(422, "invalid", "now: give a time zone (e.g. 2026-11-23T10:00:00+00:00)")
    name = request.match_info["name"]
    if "version" in body:
        document = (await store.version(name, int(body["version"]))).document
    else:
        document = (await store.get(name))["draft"]
    flow, problems = validate_flow(document, await request.app[K_FLOW_CONTEXT]())
    if flow is None:
        return _problems(problems)
    responses = body.get("http_responses", {})
    result = simulate(flow, inputs, now=now,
                      http=(lambda url, params: responses.get(url)) if isinstance(responses, dict) else None)
    return asdict(result)


def add_flow_routes(app: web.Application, store: FlowStore,
                    context: Callable[[], Awaitable[ValidationContext]]) -> None:
    app[K_FLOWS] = store
    app[K_FLOW_CONTEXT] = context
    readers = ("supervisor", "admin")
    r = app.router
    r.add_get("/api/v1/flows", guard(flow_handler(list_flows), *readers))
    r.add_post("/api/v1/flows", guard(flow_handler(create_flow), "admin"))
    r.add_get("/api/v1/flows/{name}", guard(flow_handler(get_flow), *readers))
    r.add_put("/api/v1/flows/{name}", guard(flow_handler(save_draft), "admin"))
    r.add_delete("/api/v1/flows/{name}", guard(flow_handler(delete_flow), "admin"))
    r.add_post("/api/v1/flows/{name}/validate", guard(flow_handler(validate), *readers))
    r.add_post("/api/v1/flows/{name}/publish", guard(flow_handler(publish), "admin"))
    r.add_post("/api/v1/flows/{name}/rollback", guard(flow_handler(rollback), "admin"))
    r.add_get("/api/v1/flows/{name}/versions/{version}", guard(flow_handler(get_version), *readers))
    r.add_post("/api/v1/flows/{name}/simulate", guard(flow_handler(simulate_path), *readers))
