"""REST for the configuration resources (/api/v1/<resource>): admins write, supervisors read.

Each refusal says which field is wrong (422), what already exists (409), or what still uses the thing being
deleted (409), and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from acd.config_store import RESOURCES, ConfigError, ConfigStore, Resource
from web.auth import Handler, guard

K_CONFIG = web.AppKey("config_store", ConfigStore)


def validation_response(exc: ValidationError) -> web.Response:
    problems = [{"field": ".".join(str(p) for p in e["loc"]) or None, "message": e["msg"]} for e in exc.errors()]
    summary = "; ".join(f"{p['field']}: {p['message']}" if p["field"] else str(p["message"]) for p in problems)
    return web.json_response({"error": "invalid", "message": summary, "problems": problems}, status=422)


def config_error_response(exc: ConfigError) -> web.Response:
    code = {404: "not_found", 409: "conflict", 422: "invalid"}.get(exc.status, "bad_request")
    body: dict[str, Any] = {"error": code, "message": str(exc)}
    if exc.field:
        body["problems"] = [{"field": exc.field, "message": str(exc)}]
    return web.json_response(body, status=exc.status)


async def read_model(request: web.Request, model: type[BaseModel]) -> BaseModel | web.Response:
    try:
        raw = await request.read()
        data = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response({"error": "bad_request", "message": "request body is not valid JSON"}, status=400)
    if not isinstance(data, dict):
        return web.json_response({"error": "bad_request", "message": "request body must be a JSON object"},
                                 status=400)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return validation_response(exc)


def _handlers(res: Resource) -> dict[str, Handler]:
    async def list_items(request: web.Request) -> web.StreamResponse:
        return web.json_response(await request.app[K_CONFIG].list(res))

    async def get_item(request: web.Request) -> web.StreamResponse:
        try:
            return web.json_response(await request.app[K_CONFIG].get(res, request.match_info["key"]))
        except ConfigError as exc:
            return config_error_response(exc)

    async def create_item(request: web.Request) -> web.StreamResponse:
        body = await read_model(request, res.create)
        if isinstance(body, web.Response):
            return body
        try:
            return web.json_response(await request.app[K_CONFIG].create(res, body), status=201)
        except ConfigError as exc:
            return config_error_response(exc)

    async def update_item(request: web.Request) -> web.StreamResponse:
        body = await read_model(request, res.update or res.create)
        if isinstance(body, web.Response):
            return body
        try:
            return web.json_response(await request.app[K_CONFIG].update(res, request.match_info["key"], body))
        except ConfigError as exc:
            return config_error_response(exc)

    async def delete_item(request: web.Request) -> web.StreamResponse:
        try:
            await request.app[K_CONFIG].delete(res, request.match_info["key"])
        except ConfigError as exc:
            return config_error_response(exc)
        return web.Response(status=204)

    return {"list": list_items, "get": get_item, "create": create_item, "update": update_item,
            "delete": delete_item}


async def rotate_password(request: web.Request) -> web.StreamResponse:
    try:
        return web.json_response(await request.app[K_CONFIG].rotate_phone_password(request.match_info["key"]))
    except ConfigError as exc:
        return config_error_response(exc)


def add_config_routes(app: web.Application, store: ConfigStore) -> None:
    app[K_CONFIG] = store
    for res in RESOURCES.values():
        h = _handlers(res)
        readers = ("admin",) if res.path == "users" else ("supervisor", "admin")
        base = f"/api/v1/{res.path}"
        app.router.add_get(base, guard(h["list"], *readers))
        app.router.add_post(base, guard(h["create"], "admin"))
        app.router.add_get(base + "/{key}", guard(h["get"], *readers))
        app.router.add_put(base + "/{key}", guard(h["update"], "admin"))
        app.router.add_delete(base + "/{key}", guard(h["delete"], "admin"))
    app.router.add_post("/api/v1/phones/{key}/password", guard(rotate_password, "admin"))
