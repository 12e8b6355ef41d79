"""REST for uploaded IVR prompts: upload (raw WAV/MP3 body, up to 10 MB), list, delete.

The app's body limit is 64 KiB, so the upload is read here with its own bound from the request stream; a
larger body is refused with 413 as soon as it passes 10 MB, without buffering the rest.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.prompts import MAX_BYTES, PromptError, PromptStore
from web.auth import guard
from web.errors import error

K_PROMPTS = web.AppKey("prompt_store", PromptStore)



async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or ``None`` when it is longer than ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def put_prompt(request: web.Request) -> web.Response:
    store = request.app[K_PROMPTS]
    name = request.match_info["name"]
    try:
        store.path_in_pbx(name)  # checks the name before reading anything
        data = await _read_bounded(request, MAX_BYTES)
        if data is None:
            return error(413, "too_large", f"a prompt may be at most {MAX_BYTES // (1024 * 1024)} MB")
        if not data:
            return error(422, "unsupported_format", "the request body is empty: send the WAV or MP3 bytes")
        saved: dict[str, Any] = await store.save(name, data)
    except PromptError as exc:
        return error(exc.status, exc.code, str(exc))
    return web.json_response({**saved, "flow_name": f"custom/{name}"}, status=200)


async def list_prompts(request: web.Request) -> web.Response:
    items = await request.app[K_PROMPTS].list()
    return web.json_response([{**p, "flow_name": f"custom/{p['name']}"} for p in items])


async def delete_prompt(request: web.Request) -> web.Response:
    try:
        await request.app[K_PROMPTS].delete(request.match_info["name"])
    except PromptError as exc:
        return error(exc.status, exc.code, str(exc))
    return web.Response(status=204)


def add_prompt_routes(app: web.Application, store: PromptStore) -> None:
    app[K_PROMPTS] = store
    app.router.add_get("/api/v1/prompts", guard(list_prompts, "supervisor", "admin"))
    app.router.add_put("/api/v1/prompts/{name}", guard(put_prompt, "admin"))
    app.router.add_delete("/api/v1/prompts/{name}", guard(delete_prompt, "admin"))
