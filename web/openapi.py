"""The OpenAPI document, generated from the code so it cannot drift: request schemas come from the pydantic
models the handlers validate with. `python -m web.openapi > web/openapi.json` refreshes the committed copy
(a unit test fails when the copy is stale)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from acd.config_store import RESOURCES
from ivr.flow_model import Flow
from reporting.reports import QUEUE_FIELDS
from web.api_agents import TransferIn
from web.api_recordings import ControlIn, ErasureIn, SearchIn
from web.api_reports import AGENT_FIELDS, AgentReportIn, CallsIn, IvrReportIn, QueueReportIn, RebuildIn
from web.api_security import openapi_paths as security_paths
from web.api_sipinfo import openapi_paths as sipinfo_paths
from web.api_softphone import openapi_paths as softphone_paths
from web.api_supervision import ModeIn, SessionIn

ERR = {"$ref": "#/components/schemas/Error"}


def _resp(desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"description": desc}
    if schema:
        r["content"] = {"application/json": {"schema": schema}}
    return r


def _model_ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_params(model: type[BaseModel], descriptions: dict[str, str]) -> list[dict[str, Any]]:
    """Query parameters from the model a handler validates the query with (by alias: `from`, `to`), so the
    documented names, patterns and limits are the enforced ones. Optional fields' `anyOf [X, null]` becomes X:
    a query parameter is simply left out."""
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", []))
    out: list[dict[str, Any]] = []
    for name, prop in schema["properties"].items():
        branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
        param_schema = {k: v for k, v in branches[0].items() if k != "title"}
        if prop.get("default") is not None:
            param_schema["default"] = prop["default"]
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": param_schema}
        if name in descriptions:
            param["description"] = descriptions[name]
        out.append(param)
    return out


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
COMMON = {"401": _resp("no or wrong token", ERR), "403": _resp("role not allowed", ERR)}


def build() -> dict[str, Any]:
    components: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string", "nullable": True}, "message": {"type": "string"}}}}}},
        "Health": {"type": "object", "required": ["status", "checks"], "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]}, "node": {"type": "string"},
            "checks": {"type": "object", "properties": {"ami": {"type": "boolean"}, "fastagi": {"type": "boolean"},
                                                        "db": {"type": "boolean"}}},
            "uptime_s": {"type": "number"}, "ami": {"type": "object"}, "fastagi": {"type": "object"},
            "event_writer": {"type": "object"}}},
        "Member": {"type": "object", "required": ["queue", "interface", "member", "penalty"], "properties": {
            "queue": {"type": "string"}, "interface": {"type": "string"}, "member": {"type": "string"},
            "penalty": {"type": "integer"}}},
        "StoredEvent": {"type": "object", "properties": {
            "name": {"type": "string"}, "ts": {"type": "string", "format": "date-time"},
            "uniqueid": {"type": "string", "nullable": True}, "queue": {"type": "string", "nullable": True},
            "fields": {"type": "object", "additionalProperties": {"type": "string"}}}},
    }
    qp = [{"name": "queue", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME_PATTERN}}]
    pp = [*qp, {"name": "phone", "in": "path", "required": True, "schema": {"type": "string",
                                                                            "pattern": NAME_PATTERN}}]
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Health: AMI connected, FastAGI listening, database reachable",
                             "security": [], "responses": {
                                 "200": _resp("all checks pass", {"$ref": "#/components/schemas/Health"}),
                                 "503": _resp("a check fails", {"$ref": "#/components/schemas/Health"})}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                         "responses": {"200": _resp("the OpenAPI document")}}},
        "/api/v1/live": {"get": {"summary": "Live snapshot: channels, queue members, and the KPIS.md real-time figures "
                                            "`queues` (waiting, longest_wait_s, agents_by_state, today's offered, "
                                            "answered, abandoned, short_abandoned, timeout, service_level, asa_s) "
                                            "and `agents` (state, since, reason, queue, caller). Roles: "
                                            "supervisor, admin",
                                 "responses": {"200": _resp("snapshot", {"type": "object"}), **COMMON}}},
        "/api/v1/queues/{queue}/members": {"get": {
            "summary": "Phones logged into a queue. Roles: supervisor, admin", "parameters": qp,
            "responses": {"200": _resp("members", {"type": "array",
                                                   "items": {"$ref": "#/components/schemas/Member"}}), **COMMON}}},
        "/api/v1/queues/{queue}/members/{phone}": {
            "put": {"summary": "Log a phone into a queue (AMI QueueAdd; stored, re-applied after reconnects). "
                               "Roles: admin", "parameters": pp,
                    "requestBody": {"required": False, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"penalty": {"type": "integer", "minimum": 0,
                                                                     "maximum": 1000, "default": 0}}}}}},
                    "responses": {"200": _resp("logged in", {"$ref": "#/components/schemas/Member"}),
                                  "400": _resp("body is not a JSON object", ERR), **COMMON,
                                  "404": _resp("queue not configured", ERR),
                                  "422": _resp("invalid phone name or penalty", ERR),
                                  "503": _resp("the PBX did not answer; nothing changed", ERR)}},
            "delete": {"summary": "Log a phone out of a queue. Roles: admin", "parameters": pp,
                       "responses": {"200": _resp("logged out", {"type": "object"}), **COMMON,
                                     "404": _resp("queue not configured", ERR),
                                     "422": _resp("invalid phone name", ERR),
                                     "503": _resp("the PBX did not answer; nothing changed", ERR)}}},
        "/api/v1/calls/{linkedid}/events": {"get": {
            "summary": "Stored AMI events of one call, in order. Roles: supervisor, admin",
            "parameters": [{"name": "linkedid", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}],
            "responses": {"200": _resp("events", {"type": "array",
                                                  "items": {"$ref": "#/components/schemas/StoredEvent"}}),
                          **COMMON, "422": _resp("invalid linkedid", ERR)}}},
    }
    obj_schema = {"type": "object"}
    agent_param = [{"name": "agent", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": NAME_PATTERN}}]
    state_ref = {"$ref": "#/components/schemas/AgentState"}
    components["AgentState"] = {"type": "object", "properties": {
        "agent": {"type": "string"},
        "state": {"type": "string", "enum": ["logged_out", "available", "ringing", "on_call", "on_hold", "acw",
                                            "paused"]},
        "since": {"type": "number", "nullable": True, "description": "epoch seconds"},
        "reason": {"type": "string", "nullable": True}, "linkedid": {"type": "string", "nullable": True},
        "queue": {"type": "string", "nullable": True}, "uniqueid": {"type": "string", "nullable": True},
        "logged_in_at": {"type": "number", "nullable": True}}}
    agent_errors = {**COMMON, "404": _resp("no such agent, or no phone", ERR),
                    "409": _resp("not allowed in the agent's current state (current_state says which)", ERR),
                    "422": _resp("invalid field (unknown reason or code)", ERR),
                    "503": _resp("the PBX did not answer", ERR)}
    who = "Roles: the agent themself, a supervisor of their team, an admin"
    commands = {
        "login": ("Log in: join every queue whose required skill the agent has (penalty 5 - level)", None),
        "logout": ("Log out of all queues", None),
        "ready": ("End a pause or after-call work", None),
        "pause": ("Pause with a reason code (pause-reasons)", {"type": "object", "required": ["reason"],
                                                               "properties": {"reason": {"type": "string"}}}),
        "disposition": ("Set the wrap-up code of the current or last call (dispositions)",
                        {"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}}),
    }
    for path, (summary, body) in commands.items():
        op: dict[str, Any] = {"summary": f"{summary}. {who}", "parameters": agent_param,
                              "responses": {"200": _resp("the agent's new state", state_ref), **agent_errors}}
        if body:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths[f"/api/v1/agents/{{agent}}/{path}"] = {"post": op}
    call_errors = {**agent_errors,
                   "409": _resp("the agent has no call (hold, transfer), the call is already on hold (hold) or not "
                                "on hold by this API (unhold); current_state says the agent's state", ERR),
                   "502": _resp("the PBX answered but did not do it (e.g. the call ended meanwhile)", ERR)}
    paths["/api/v1/agents/{agent}/hold"] = {"post": {
        "summary": "Put the caller of the agent's current queue call on hold (server-side: the call stays in the "
                   "queue's bridge; Asterisk raises Hold for the agent's channel, so the time counts as hold_s). "
                   f"Answers once Asterisk confirmed: state on_hold. {who}", "parameters": agent_param,
        "responses": {"200": _resp("the agent's new state", state_ref), **call_errors}}}
    paths["/api/v1/agents/{agent}/unhold"] = {"post": {
        "summary": "Take the caller off a hold made with POST .../hold (a hold made on the phone is ended there). "
                   f"Answers once Asterisk confirmed: state on_call. {who}", "parameters": agent_param,
        "responses": {"200": _resp("the agent's new state", state_ref), **call_errors}}}
    paths["/api/v1/agents/{agent}/transfer"] = {"post": {
        "summary": "Blind-transfer the caller of the agent's current queue call (AMI BlindTransfer: the agent's leg "
                   "ends, AgentComplete Reason=transfer, the call's facts say transferred) to an extension (a phone "
                   f"named by the digits) or else a number through the carrier trunk. {who}",
        "parameters": agent_param, "requestBody": _json_body(_model_ref(TransferIn, components)),
        "responses": {"200": _resp("transfer accepted by the PBX", {"type": "object", "properties": {
            "agent": {"type": "string"}, "to": {"type": "string"},
            "kind": {"type": "string", "enum": ["extension", "number"]}, "linkedid": {"type": "string"}}}),
            **call_errors, "422": _resp("to: not 2-20 digits", ERR)}}}
    paths["/api/v1/agents/{agent}/force"] = {"post": {
        "summary": "Supervisor force: set an agent to available, paused (with reason) or logged_out. "
                   "Roles: supervisor of the agent's team, admin", "parameters": agent_param,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["state"], "properties": {
                "state": {"type": "string", "enum": ["available", "paused", "logged_out"]},
                "reason": {"type": "string"}}}}}},
        "responses": {"200": _resp("the agent's new state", state_ref), **agent_errors}}}
    paths["/api/v1/agents/{agent}/state"] = {"get": {"summary": f"The agent's current state. {who}",
                                                     "parameters": agent_param,
                                                     "responses": {"200": _resp("state", state_ref), **agent_errors}}}
    paths["/api/v1/agent-states"] = {"get": {"summary": "Every agent's current state. Roles: supervisor, admin",
                                             "responses": {"200": _resp("states", {"type": "array",
                                                                                   "items": state_ref}), **COMMON}}}
    flow_name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string",
                                                                            "pattern": NAME_PATTERN}}]
    flow_doc = _model_ref(Flow, components)
    problems = _resp("the flow has problems: `problems` lists each with its node id", ERR)
    flow_errors = {**COMMON, "404": _resp("no such flow or version", ERR)}
    paths["/api/v1/flows"] = {
        "get": {"summary": "List IVR flows with their published versions. Roles: supervisor, admin",
                "responses": {"200": _resp("flows", {"type": "array", "items": obj_schema}), **COMMON}},
        "post": {"summary": "Create a flow (its draft); refused with every problem listed. Roles: admin",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["name", "document"],
                     "properties": {"name": {"type": "string", "pattern": NAME_PATTERN}, "document": flow_doc}}}}},
                 "responses": {"201": _resp("created", obj_schema), **COMMON, "409": _resp("exists", ERR),
                               "422": problems}}}
    paths["/api/v1/flows/{name}"] = {
        "get": {"summary": "A flow: draft, published version, versions. Roles: supervisor, admin",
                "parameters": flow_name, "responses": {"200": _resp("flow", obj_schema), **flow_errors}},
        "put": {"summary": "Replace the draft (validated). Roles: admin", "parameters": flow_name,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["document"], "properties": {"document": flow_doc}}}}},
                "responses": {"200": _resp("saved", obj_schema), **flow_errors, "422": problems}},
        "delete": {"summary": "Delete a flow and its versions. Roles: admin", "parameters": flow_name,
                   "responses": {"204": _resp("deleted"), **flow_errors,
                                 "409": _resp("an inbound route uses it", ERR)}}}
    paths["/api/v1/flows/{name}/validate"] = {"post": {
        "summary": "Validate a document (or the draft) without saving. Roles: supervisor, admin",
        "parameters": flow_name, "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"document": flow_doc}}}}},
        "responses": {"200": _resp("`ok` and `problems`", obj_schema), **flow_errors}}}
    paths["/api/v1/flows/{name}/publish"] = {"post": {
        "summary": "Publish the draft as a new version: the next call runs it, no Asterisk reload. Roles: admin",
        "parameters": flow_name, "responses": {"200": _resp("published_version", obj_schema), **flow_errors,
                                               "422": problems}}}
    paths["/api/v1/flows/{name}/rollback"] = {"post": {
        "summary": "Make an earlier published version the current one. Roles: admin", "parameters": flow_name,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["version"], "properties": {"version": {"type": "integer",
                                                                               "minimum": 1}}}}}},
        "responses": {"200": _resp("published_version", obj_schema), **flow_errors,
                      "422": _resp("invalid version", ERR)}}}
    paths["/api/v1/flows/{name}/versions/{version}"] = {"get": {
        "summary": "One published version's document. Roles: supervisor, admin",
        "parameters": [*flow_name, {"name": "version", "in": "path", "required": True,
                                    "schema": {"type": "integer", "minimum": 1}}],
        "responses": {"200": _resp("version", obj_schema), **flow_errors}}}
    paths["/api/v1/flows/{name}/simulate"] = {"post": {
        "summary": "Walk the draft (or a version) with given caller inputs, no call. `inputs`: DTMF strings per "
                   "input node (\"\" = timeout); `now`: ISO instant for time conditions; `http_responses`: "
                   "{url: JSON} answers for http_lookup nodes. Roles: supervisor, admin",
        "parameters": flow_name,
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "inputs": {"type": "array", "items": {"type": "string", "pattern": "^[0-9*#]{0,32}$"}},
                "now": {"type": "string", "format": "date-time"}, "version": {"type": "integer"},
                "http_responses": {"type": "object"}}}}}},
        "responses": {"200": _resp("path, variables, end", obj_schema), **flow_errors, "422": problems}}}
    paths["/api/v1/feed"] = {"get": {
        "summary": "WebSocket live feed (JSON messages: screen_pop, agent_state (with caller, queue, event_ts), "
                   "queue_realtime (the queue's real-time figures as in /api/v1/live, with event_ts: the instant "
                   "of the AMI event that caused the update), disposition ...). The token may be given as "
                   "?token= (browsers cannot set headers on a WebSocket). Agents receive only their own "
                   "messages. Roles: agent, supervisor, admin",
        "parameters": [{"name": "token", "in": "query", "required": False, "schema": {"type": "string"}}],
        "responses": {"101": _resp("switching to WebSocket"), **COMMON}}}
    for res in RESOURCES.values():
        create = _model_ref(res.create, components)
        update = _model_ref(res.update, components) if res.update else create
        readers = "admin" if res.path == "users" else "supervisor, admin"
        key = [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
                "description": f"the {res.key}"}]
        obj = {"type": "object"}
        once = {"phones": " The generated SIP password is in this response only.",
                "users": " The API token is in this response only."}.get(res.path, "")
        paths[f"/api/v1/{res.path}"] = {
            "get": {"summary": f"List {res.path}. Roles: {readers}",
                    "responses": {"200": _resp(res.path, {"type": "array", "items": obj}), **COMMON}},
            "post": {"summary": f"Create one of {res.path}.{once} Roles: admin",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": create}}},
                     "responses": {"201": _resp("created", obj), "400": _resp("not a JSON object", ERR), **COMMON,
                                   "409": _resp("already exists", ERR),
                                   "422": _resp("invalid field, or a reference to something missing", ERR)}},
        }
        paths[f"/api/v1/{res.path}/{{key}}"] = {
            "get": {"summary": f"One of {res.path}. Roles: {readers}", "parameters": key,
                    "responses": {"200": _resp("found", obj), **COMMON, "404": _resp("not found", ERR)}},
            "put": {"summary": f"Change one of {res.path}" + (" (only the fields sent)" if res.update else
                                                               " (full replacement; the key must match)")
                               + ". Roles: admin", "parameters": key,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": update}}},
                    "responses": {"200": _resp("changed", obj), **COMMON, "404": _resp("not found", ERR),
                                  "422": _resp("invalid field", ERR)}},
            "delete": {"summary": f"Delete one of {res.path}. Roles: admin", "parameters": key,
                       "responses": {"204": _resp("deleted"), **COMMON, "404": _resp("not found", ERR),
                                     "409": _resp("still in use (the message says by what)", ERR)}},
        }
    prompt_name = [{"name": "name", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": NAME_PATTERN},
                    "description": "the prompt; a flow plays it as `custom/<name>`"}]
    prompt_obj = {"type": "object", "properties": {
        "name": {"type": "string"}, "duration_s": {"type": "number"}, "size": {"type": "integer"},
        "flow_name": {"type": "string", "description": "the name to use in flows: custom/<name>"}}}
    paths["/api/v1/prompts"] = {"get": {
        "summary": "Uploaded IVR prompts (8 kHz mono WAV). Roles: supervisor, admin",
        "responses": {"200": _resp("prompts", {"type": "array", "items": prompt_obj}), **COMMON}}}
    paths["/api/v1/prompts/{name}"] = {
        "put": {"summary": "Upload (or replace) a prompt: the raw WAV or MP3 bytes as the body, at most 10 MB; "
                           "the format is detected from the bytes and converted to 8 kHz 16-bit mono. "
                           "Roles: admin", "parameters": prompt_name,
                "requestBody": {"required": True, "content": {
                    "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                    "audio/mpeg": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": _resp("stored", prompt_obj), **COMMON,
                              "413": _resp("larger than 10 MB", ERR),
                              "422": _resp("invalid name, not WAV/MP3, or audio that cannot be read", ERR)}},
        "delete": {"summary": "Delete a prompt. Roles: admin", "parameters": prompt_name,
                   "responses": {"204": _resp("deleted"), **COMMON, "404": _resp("not found", ERR),
                                 "422": _resp("invalid name", ERR)}},
    }
    paths["/api/v1/phones/{key}/password"] = {"post": {
        "summary": "Generate a new SIP password for a phone (shown once). Roles: admin",
        "parameters": [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _resp("the new password", obj), **COMMON, "404": _resp("not found", ERR)}}}
    _recording_paths(paths, components)
    _supervision_paths(paths, components)
    _report_paths(paths, components)
    _web_ui_paths(paths, components)
    sipinfo_paths(paths)
    security_paths(paths)
    softphone_paths(paths)
    return {
        "openapi": "3.0.3",
        "info": {"title": "ccpbx service API", "version": "0.2.0",
                 "description": "REST API of the contact-center service. Every /api path except this document "
                                "needs `Authorization: Bearer <token>` or the web UI's session cookie (signed in "
                                "at /login; then unsafe methods also need the `X-CSRF-Token` header with the "
                                "session's token); the role each "
                                "path needs is in its summary. "
                                "Errors are JSON `{error, message, problems?}`."},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": components},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _web_ui_paths(paths: dict[str, Any], components: dict[str, Any]) -> None:
    """The session and password endpoints of the web UI, and the agent desktop's one read."""
    obj: dict[str, Any] = {"type": "object"}
    paths["/api/v1/session"] = {"get": {
        "summary": "Who is signed in: user, role, agent, team, phone, the session's CSRF token (null with a bearer "
                   "token) and the pages the role may open. Roles: agent, supervisor, admin",
        "responses": {"200": _resp("the principal", obj), **COMMON}}}
    pw = _json_body({"type": "object", "required": ["password"], "additionalProperties": False,
                     "properties": {"password": {"type": "string", "minLength": 10, "maxLength": 256}}})
    paths["/api/v1/users/{name}/password"] = {"put": {
        "summary": "Set a user's web sign-in password (argon2id hash stored; the user's sessions end). Roles: admin",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": pw,
        "responses": {"200": _resp("set", obj), **COMMON, "404": _resp("no such user", ERR),
                      "422": _resp("the password breaks the rules", ERR)}}}
    paths["/api/v1/session/password"] = {"post": {
        "summary": "Change your own password (needs the current one). Roles: agent, supervisor, admin",
        "requestBody": _json_body({"type": "object", "required": ["current", "password"],
                                   "additionalProperties": False,
                                   "properties": {"current": {"type": "string"}, "password": {"type": "string"}}}),
        "responses": {"200": _resp("changed", obj), **COMMON, "422": _resp("the password breaks the rules", ERR)}}}
    paths["/api/v1/agents/{agent}/desktop"] = {"get": {
        "summary": "The agent desktop in one read: state, the call in hand (caller from the live channel, never from "
                   "the request), that caller's last 10 earlier queue calls, pause reasons and wrap-up codes. "
                   "Roles: the agent themself, a supervisor of their team, admin",
        "parameters": [{"name": "agent", "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": NAME_PATTERN}}],
        "responses": {"200": _resp("the desktop", obj), **COMMON, "404": _resp("no such agent", ERR)}}}


def _recording_paths(paths: dict[str, Any], components: dict[str, Any]) -> None:
    """Recordings (web/api_recordings.py): who sees which recording is one rule, so every read path says it."""
    nullable_str = {"type": "string", "nullable": True}
    components["RecordingPause"] = {"type": "object", "properties": {
        "paused_at": {"type": "string", "format": "date-time"}, "paused_by": {"type": "string"},
        "resumed_at": {**nullable_str, "format": "date-time"},
        "resumed_by": {**nullable_str, "description": "a user, `auto` (the maximum pause ran out) or `hangup`"}}}
    components["Recording"] = {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"}, "linkedid": {"type": "string"},
        "uniqueid": {"type": "string", "description": "the recorded (caller's) channel"},
        "queue": nullable_str, "agent": nullable_str,
        "caller": {"type": "string", "description": "the caller's number, or empty when it was not a number"},
        "trigger": {"type": "string", "enum": ["policy", "on_demand"]},
        "started_by": {**nullable_str, "description": "who started an on-demand recording"},
        "started_at": {"type": "string", "format": "date-time"},
        "ended_at": {**nullable_str, "format": "date-time"},
        "duration_s": {"type": "number", "nullable": True}, "size_bytes": {"type": "integer", "nullable": True},
        "sha256": {**nullable_str, "description": "of the whole file, once the call ended"},
        "status": {"type": "string", "enum": ["recording", "complete", "missing"]},
        "retention_days": {"type": "integer"},
        "disposition": {**nullable_str, "description": "the agent's last wrap-up code for the call"},
        "pauses": {"type": "array", "items": {"$ref": "#/components/schemas/RecordingPause"}}}}
    components["LiveRecording"] = {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"}, "linkedid": {"type": "string"}, "queue": nullable_str,
        "agent": nullable_str, "trigger": {"type": "string", "enum": ["policy", "on_demand"]},
        "started_at": {"type": "string", "format": "date-time"}, "paused": {"type": "boolean"},
        "paused_since": {**nullable_str, "format": "date-time"}}}
    components["RecordingAudit"] = {"type": "object", "properties": {
        "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"},
        "action": {"type": "string", "enum": ["start", "stop", "pause", "resume", "play", "purge", "erase"]},
        "recording_id": {**nullable_str, "format": "uuid"}, "linkedid": nullable_str,
        "detail": {"type": "object"}}}
    rec_ref = {"$ref": "#/components/schemas/Recording"}
    live_ref = {"$ref": "#/components/schemas/LiveRecording"}
    who_sees = ("Roles: admin (all), supervisor (their team's agents'; without a team: all), agent (their own, "
                "only with recording.agents_play_own; otherwise nothing)")
    rec_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]
    not_found = _resp("no such recording, or not one you may see", ERR)
    limit = [{"name": "limit", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}}]
    paths["/api/v1/recordings"] = {"get": {
        "summary": f"Search recordings, newest first. {who_sees}",
        "parameters": _query_params(SearchIn, {
            "from": "started at or after this instant (ISO 8601, e.g. 2025-01-31T08:00:00Z)",
            "to": "started before this instant (ISO 8601)",
            "caller": "the caller's number exactly as stored (digits, optional leading +)",
            "disposition": "the agent's wrap-up code for the call"}),
        "responses": {"200": _resp("recordings", {"type": "array", "items": rec_ref}), **COMMON,
                      "422": _resp("invalid or unknown query parameter (`problems` names it)", ERR)}}}
    paths["/api/v1/recordings/{id}"] = {"get": {
        "summary": f"One recording's metadata, its PCI pauses included. {who_sees}", "parameters": rec_id,
        "responses": {"200": _resp("recording", rec_ref), **COMMON, "404": not_found}}}
    wav = {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}
    paths["/api/v1/recordings/{id}/audio"] = {"get": {
        "summary": "The recording's WAV file (8 kHz 16-bit mono). `Range: bytes=...` gives 206 Partial Content "
                   "(players seek with it). Every request is audited (`play`). The token may be given as ?token= "
                   f"(an <audio src> cannot send headers). {who_sees}",
        "parameters": [*rec_id,
                       {"name": "download", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": ["1", "true"]},
                        "description": "Content-Disposition: attachment instead of inline"},
                       {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "the bearer token, when no Authorization header can be sent"},
                       {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                        "example": "bytes=0-1023"}],
        "responses": {"200": {"description": "the whole file", "content": wav},
                      "206": {"description": "the requested byte range (Content-Range says which)", "content": wav},
                      **COMMON, "404": not_found,
                      "409": _resp("the call is still being recorded (`still_recording`)", ERR),
                      "410": _resp("the row exists but its file is gone", ERR),
                      "416": _resp("the range is outside the file")}}}
    paths["/api/v1/recordings/purge"] = {"post": {
        "summary": "Run the retention purge now: every finished recording older than its queue's retention is "
                   "deleted (file and row), one audit row each. Roles: admin",
        "responses": {"200": _resp("how many were deleted", {"type": "object", "properties": {
            "purged": {"type": "integer"}}}), **COMMON}}}
    paths["/api/v1/recordings/erasure"] = {"post": {
        "summary": "Erase every finished recording of a caller's number (a data-subject request); calls still "
                   "being recorded are listed, not touched. Roles: admin",
        "requestBody": _json_body(_model_ref(ErasureIn, components)),
        "responses": {"200": _resp("erased recordings' ids, and those still recording", {
            "type": "object", "properties": {
                "erased": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "still_recording": {"type": "array", "items": {"type": "string", "format": "uuid"}}}}),
            "400": _resp("body is not a JSON object", ERR), **COMMON,
            "422": _resp("caller is not a number", ERR)}}}
    paths["/api/v1/recordings/audit"] = {"get": {
        "summary": "The recordings audit trail, newest first: start, stop, pause, resume, play, purge, erase. "
                   "Roles: admin", "parameters": limit,
        "responses": {"200": _resp("audit rows", {"type": "array",
                                                  "items": {"$ref": "#/components/schemas/RecordingAudit"}}),
                      **COMMON, "422": _resp("invalid limit", ERR)}}}
    agent_param = [{"name": "agent", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": NAME_PATTERN}}]
    who = "Roles: the agent themself, a supervisor of their team, an admin"
    forbidden = _resp("role not allowed, not your agent, or an agent stopping a recording their queue's policy "
                      "started", ERR)
    paths["/api/v1/agents/{agent}/recording"] = {
        "get": {"summary": f"The recording of the agent's call in progress, if any. {who}",
                "parameters": agent_param,
                "responses": {"200": _resp("on_call and the live recording (null when none)", {
                    "type": "object", "properties": {"agent": {"type": "string"}, "on_call": {"type": "boolean"},
                                                     "recording": {**live_ref, "nullable": True}}}),
                              "401": COMMON["401"], "403": _resp("role not allowed, or not your agent", ERR)}},
        "post": {"summary": "Control the recording of the agent's call: start (on demand; refused when the queue's "
                            "policy is `none`), stop, pause (PCI: both directions muted, resumed by itself after "
                            f"recording.pci_max_pause_s; listening supervisors are dropped), resume. {who}",
                 "parameters": agent_param, "requestBody": _json_body(_model_ref(ControlIn, components)),
                 "responses": {"200": _resp("the recording after the action", {"type": "object", "properties": {
                     "agent": {"type": "string"}, "action": {"type": "string"}, "recording": live_ref}}),
                     "400": _resp("body is not a JSON object", ERR), "401": COMMON["401"], "403": forbidden,
                     "409": _resp("refused in the current state: `error` is not_on_call, not_recording, "
                                  "already_recording, recording_disabled, pause_state or pbx_refused", ERR),
                     "422": _resp("invalid action", ERR)}}}


def _supervision_paths(paths: dict[str, Any], components: dict[str, Any]) -> None:
    """Live supervision (web/api_supervision.py)."""
    nullable_time = {"type": "string", "format": "date-time", "nullable": True}
    session = {
        "id": {"type": "string", "format": "uuid"}, "supervisor": {"type": "string"}, "agent": {"type": "string"},
        "phone": {"type": "string", "description": "the supervisor's phone that was rung"},
        "linkedid": {"type": "string", "description": "the agent's call"},
        "status": {"type": "string", "enum": ["ringing", "active", "ended", "failed"]},
        "requested_at": {"type": "string", "format": "date-time"}, "started_at": nullable_time,
        "ended_at": nullable_time, "end_reason": {"type": "string", "nullable": True}}
    components["SupervisionSession"] = {"type": "object", "properties": {
        **session, "mode": {"type": "string", "enum": ["listen", "whisper", "barge", "takeover"]}}}
    components["SupervisionRecord"] = {"type": "object", "properties": {**session, "modes": {
        "type": "array", "items": {"type": "object", "properties": {
            "mode": {"type": "string"}, "from": {"type": "string", "format": "date-time"}, "to": nullable_time}}}}}
    ref = {"$ref": "#/components/schemas/SupervisionSession"}
    roles = "Roles: supervisor (agents of their team; without a team: all), admin"
    sid = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]
    not_found = _resp("no such session, or not one of your team's", ERR)
    pbx = _resp("the PBX refused the action (`pbx_failed`)", ERR)
    paths["/api/v1/supervision"] = {
        "get": {"summary": f"Live sessions (ringing or active). {roles}",
                "responses": {"200": _resp("sessions", {"type": "array", "items": ref}), **COMMON}},
        "post": {"summary": "Start a session: the supervisor's phone rings and, once answered, is attached to the "
                            "agent's call in `mode` (listen: silent; whisper: the agent hears the supervisor; "
                            "barge: both parties do; takeover: the caller is moved to the supervisor and the agent "
                            f"released). {roles}",
                 "requestBody": _json_body(_model_ref(SessionIn, components)),
                 "responses": {"201": _resp("the session, ringing", ref), "400": _resp("body is not a JSON object",
                                                                                      ERR),
                               "401": COMMON["401"], "403": _resp("role not allowed, or the agent is not in your team",
                                                                  ERR),
                               "404": _resp("no such agent", ERR),
                               "409": _resp("refused: `not_on_call` (the agent is not on a call), `recording_paused` "
                                            "(a PCI pause is on), `phone_busy` (the phone is in a session)", ERR),
                               "422": _resp("invalid field; no phone stored and none named; or the phone is not a "
                                            "configured supervisor phone", ERR),
                               "502": pbx}}}
    paths["/api/v1/supervision/history"] = {"get": {
        "summary": f"Every session with the modes it was in, newest first (the audit trail). {roles}",
        "parameters": [{"name": "limit", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
        "responses": {"200": _resp("sessions", {"type": "array",
                                                "items": {"$ref": "#/components/schemas/SupervisionRecord"}}),
                      **COMMON, "422": _resp("invalid limit", ERR)}}}
    paths["/api/v1/supervision/{id}"] = {
        "get": {"summary": f"One session. {roles}", "parameters": sid,
                "responses": {"200": _resp("session", ref), **COMMON, "404": not_found}},
        "patch": {"summary": "Switch an answered session's mode (listen, whisper, barge; or takeover, after which "
                             f"no other mode). {roles}", "parameters": sid,
                  "requestBody": _json_body(_model_ref(ModeIn, components)),
                  "responses": {"200": _resp("session", ref), "400": _resp("body is not a JSON object", ERR),
                                **COMMON, "404": not_found,
                                "409": _resp("refused: `session_state` (not answered yet, ended, or after a takeover), "
                                             "`recording_paused`, `not_on_call` (the agent's call ended)", ERR),
                                "422": _resp("invalid mode", ERR), "502": pbx}},
        "delete": {"summary": f"End a session (the supervisor's phone is hung up). {roles}", "parameters": sid,
                   "responses": {"200": _resp("session (status `ended` once the PBX reported the hang-up)", ref),
                                 **COMMON, "404": not_found}}}


_RANGE = {"from": "start of the range, inclusive (ISO 8601 with offset; encode `+` as %2B)",
          "to": "end of the range, exclusive (after `from`, at most 400 days later)"}
_FORMAT = {"format": "`csv` for CSV (also chosen by `Accept: text/csv` when `format` is absent)"}
_INTERVALS = {"interval": "interval length; intervals are aligned to the wall clock of `tz` (a DST change day has "
                          "23 or 25 one-hour intervals); the first and last are clipped to the range",
              "tz": "IANA time zone (default UTC); the times in the answer carry its offset"}


def _report_paths(paths: dict[str, Any], components: dict[str, Any]) -> None:
    """Historical reports (web/api_reports.py); figures as defined in KPIS.md."""
    num = {"type": "number", "nullable": True}
    counts = {"offered", "answered", "abandoned", "short_abandoned", "timeout", "handled", "missed"}
    figure_props = {f: {"type": "integer"} if f in counts else dict(num) for f in QUEUE_FIELDS}
    components["QueueFigures"] = {"type": "object", "description": "KPIS.md queue figures; null = 0 ÷ 0",
                                  "properties": figure_props}
    agent_props: dict[str, Any] = {f: {"type": "integer"} if f in counts else dict(num) for f in AGENT_FIELDS}
    agent_props["paused_by_reason"] = {"type": "object", "additionalProperties": {"type": "number"}}
    components["AgentFigures"] = {"type": "object", "description": "KPIS.md agent figures; null = 0 ÷ 0",
                                  "properties": agent_props}
    span = {"start": {"type": "string", "format": "date-time"}, "end": {"type": "string", "format": "date-time"}}
    components["IncompleteRange"] = {"type": "object", "description": "a node's AMI connection was down: events "
                                     "(and the figures built on them) may be missing", "properties": {
                                         "node": {"type": "string"}, "since": {"type": "string", "format": "date-time"},
                                         "until": {"type": "string", "format": "date-time", "nullable": True},
                                         "reconciled": {"type": "boolean", "description": "queue calls of the "
                                                        "range were rebuilt from queue_log; agent states and IVR "
                                                        "steps were not (listed by the agent and IVR reports "
                                                        "only)"}}}
    gaps = {"type": "array", "items": {"$ref": "#/components/schemas/IncompleteRange"}}
    csv_ok = {"text/csv": {"schema": {"type": "string"}}}
    errors = {**COMMON, "422": _resp("invalid or unknown query parameter (`problems` names it)", ERR)}

    def report(key: str, figures: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{figures}"}
        item = {"type": "object", "properties": {
            key: {"type": "string"}, "total": ref,
            "intervals": {"type": "array", "items": {"allOf": [ref, {"type": "object", "properties": span}]}}}}
        return {"type": "object", "properties": {
            "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
            "interval": {"type": "string"}, "tz": {"type": "string"}, f"{key}s": {"type": "array", "items": item},
            "incomplete_ranges": gaps}}

    csv_note = ("CSV: one row per ({0}, interval), then the {0}'s total row (`start` = `total`, `end` empty); "
                "incomplete ranges in the X-Incomplete-Ranges header.")
    paths["/api/v1/reports/queues"] = {"get": {
        "summary": "Queue figures per interval and for the range, every interval listed (empty ones with offered "
                   "0). Service level uses `sl_threshold_s`, else the queue's, else 20 s. A report of more than "
                   "20 000 interval rows (queues × intervals; CSV: 400 000) is refused with 422 `too_large`. "
                   + csv_note.format("queue") + " Roles: supervisor, admin",
        "parameters": _query_params(QueueReportIn, {**_RANGE, **_INTERVALS, **_FORMAT,
                                                    "queue": "only this queue (default: every queue)",
                                                    "sl_threshold_s": "service-level threshold for every queue"}),
        "responses": {"200": {"description": "the report", "content": {
            "application/json": {"schema": report("queue", "QueueFigures")}, **csv_ok}}, **errors}}}
    paths["/api/v1/reports/agents"] = {"get": {
        "summary": "Agent figures per interval and for the range, cut exactly from the agents' state changes. "
                   + csv_note.format("agent") + " `paused_by_reason` is one cell of JSON. Roles: supervisor (a "
                   "supervisor with a team sees their team's agents only), admin",
        "parameters": _query_params(AgentReportIn, {**_RANGE, **_INTERVALS, **_FORMAT,
                                                    "agent": "only this agent (default: every agent)"}),
        "responses": {"200": {"description": "the report", "content": {
            "application/json": {"schema": report("agent", "AgentFigures")}, **csv_ok}}, **errors}}}
    components["CallFact"] = {"type": "object", "description": "one queue call (KPIS.md, call facts)",
                              "properties": {
                                  "linkedid": {"type": "string"}, "uniqueid": {"type": "string"},
                                  "queue": {"type": "string"}, "caller_number": {"type": "string"},
                                  "entered_at": {"type": "string", "format": "date-time"},
                                  "ended_at": {"type": "string", "format": "date-time", "nullable": True},
                                  "outcome": {"type": "string", "nullable": True},
                                  "agent": {"type": "string", "nullable": True},
                                  **{f: dict(num) for f in ("wait_s", "ring_s", "talk_s", "hold_s", "acw_s")},
                                  "transferred": {"type": "boolean"},
                                  "disposition": {"type": "string", "nullable": True},
                                  "csat": {"type": "integer", "nullable": True}, "final": {"type": "boolean"}}}
    paths["/api/v1/calls"] = {"get": {
        "summary": "Queue-call facts that entered in the range, in the order they entered. CSV: one row per fact. "
                   "Roles: supervisor, admin",
        "parameters": _query_params(CallsIn, {**_RANGE, **_FORMAT, "caller": "the caller's number exactly"}),
        "responses": {"200": {"description": "the facts", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
                "limit": {"type": "integer"}, "offset": {"type": "integer"},
                "calls": {"type": "array", "items": {"$ref": "#/components/schemas/CallFact"}},
                "incomplete_ranges": gaps}}}, **csv_ok}}, **errors}}}
    paths["/api/v1/reports/ivr"] = {"get": {
        "summary": "IVR paths per flow (runs whose first step is in the range): per node the calls that entered "
                   "it, step outcomes (choices), next nodes, hang-ups; per flow the self-service containment "
                   "(runs that ended in the flow without a queue or transfer ÷ runs). CSV: one row per (flow, node), "
                   "then the flow's total row (`node_id` = `total`, with the flow's `hung_up`, `calls`, `contained`, "
                   "`containment`, `to_queue`, `transferred`); `outcomes` and `next` are one cell of JSON each. "
                   "Roles: supervisor, admin",
        "parameters": _query_params(IvrReportIn, {**_RANGE, **_FORMAT, "flow": "only this flow"}),
        "responses": {"200": {"description": "the report", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
                "flows": {"type": "array", "items": {"type": "object"}}, "incomplete_ranges": gaps}}},
            **csv_ok}}, **errors}}}
    paths["/api/v1/reports/rebuild"] = {"post": {
        "summary": "Project every call that entered a queue in the range again from its stored events (the same "
                   "function as the live path: the facts come out identical unless the events changed, e.g. by "
                   "reconciliation). Role: admin",
        "parameters": _query_params(RebuildIn, dict(_RANGE)),
        "responses": {"200": _resp("how many calls were projected", {"type": "object", "properties": {
            "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
            "calls": {"type": "integer"}}}), **errors}}}


if __name__ == "__main__":
    print(json.dumps(build(), indent=2))
