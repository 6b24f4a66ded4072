"""The OpenAPI 3.1 document served at `GET /openapi.json`.

Hand-written rather than generated from docstring YAML (starlette's SchemaGenerator): no
YAML parser at run time, the schemas are checked by mypy like any other data, and a unit
test fails when a route is missing from it (tests/unit/api/test_calls_api.py).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from callbridge import __version__

__all__ = ["openapi_document", "openapi_routes"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
}
_CALL = {
    "type": "object",
    "required": ["id", "live"],
    "properties": {
        "id": {"type": "string"},
        "live": {"type": "boolean"},
        "transport": {"type": "string", "enum": ["sip", "twilio"]},
        "direction": {"type": "string", "enum": ["inbound", "outbound"]},
        "from": {"type": "string"},
        "to": {"type": "string"},
        "agent": {"type": "string"},
        "started": {"type": ["number", "null"], "description": "Unix seconds"},
        "answered": {"type": ["number", "null"]},
        "ended": {"type": ["number", "null"]},
        "end_reason": {"type": ["string", "null"]},
        "ids": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_CALL_DETAIL = {
    "allOf": [
        {"$ref": "#/components/schemas/Call"},
        {
            "type": "object",
            "properties": {
                "legs": {"type": "array", "items": {"type": "object"}},
                "events": {"type": "array", "items": {"type": "object"}},
                "turns": {"type": "array", "items": {"type": "object"}},
                "transcript": {"type": ["object", "null"]},
            },
        },
    ]
}
_REGISTRATION = {
    "type": "object",
    "properties": {
        "account": {"type": "string"},
        "state": {
            "type": "string",
            "enum": ["unregistered", "registering", "registered", "failed", "unregistering"],
        },
        "aor": {"type": "string"},
        "registrar": {"type": "string"},
        "reason": {"type": "string"},
        "status": {"type": ["integer", "null"]},
        "expires": {"type": ["integer", "null"]},
        "failures": {"type": "integer"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_CALL_ID = [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_NOT_FOUND = _error("No such call")
_ENDED = _error("The call has ended")


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness (no token); 503 while shutting down",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "Serving")},
            }
        },
        "/status": {
            "get": {
                "summary": "Version, live calls, Twilio streams",
                "responses": {"200": _json({"type": "object"}, "Status")},
            }
        },
        "/calls": {
            "get": {
                "summary": "List calls, newest first",
                "parameters": [
                    {"name": "live", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        "name": "q",
                        "in": "query",
                        "description": "Only calls whose from, to, agent or transcript holds "
                        "this text (any case; among the newest 5000 stored calls)",
                        "schema": {"type": "string", "maxLength": 100},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"calls": {"type": "array", "items": _ref("Call")}},
                        },
                        "Calls",
                    ),
                    "422": _error("A bad query parameter (named in `field`)"),
                },
            },
            "post": {
                "summary": "Place an outbound call (SIP or Twilio) with an agent; answers once "
                "answered",
                "requestBody": _body(
                    ["to"],
                    {
                        "to": {
                            "type": "string",
                            "description": "SIP URI, or a number/user with `account`, or an "
                            "E.164 number with `via: twilio`",
                        },
                        "agent": {"type": "string"},
                        "account": {"type": "string", "description": "[accounts.NAME] trunk"},
                        "via": {"type": "string", "enum": ["sip", "twilio"], "default": "sip"},
                        "ring_timeout": {
                            "type": "number",
                            "minimum": 1,
                            "maximum": 600,
                            "default": 60,
                        },
                        "listen": {
                            "type": "boolean",
                            "default": False,
                            "description": "the call on the gateway machine's speakers and "
                            "microphone instead of an agent (409 without an audio device)",
                        },
                    },
                ),
                "responses": {
                    "202": _json(
                        {"type": "object", "properties": {"id": {"type": "string"}}}, "Answered"
                    ),
                    "400": _error("The body is not a JSON object"),
                    "422": _error("A bad field (named in `field`)"),
                    "502": _error("Refused (`sip_status`, or `twilio_status` via Twilio)"),
                    "409": _error("listen: no audio device on the gateway's machine"),
                    "503": _error("SIP or Twilio calling not running, or shutting down"),
                    "504": _error("No answer in time"),
                },
            },
        },
        "/calls/{call_id}": {
            "get": {
                "summary": "One call: legs, events, turns, transcript",
                "parameters": _CALL_ID,
                "responses": {"200": _json(_ref("CallDetail"), "The call"), "404": _NOT_FOUND},
            }
        },
        "/calls/{call_id}/hangup": {
            "post": {
                "summary": "Hang up (BYE)",
                "parameters": _CALL_ID,
                "responses": {
                    "202": _json({"type": "object"}, "Hanging up"),
                    "404": _NOT_FOUND,
                    "409": _ENDED,
                },
            }
        },
        "/calls/{call_id}/dtmf": {
            "post": {
                "summary": "Send DTMF (RFC 4733)",
                "parameters": _CALL_ID,
                "requestBody": _body(
                    ["digits"], {"digits": {"type": "string", "pattern": "^[0-9*#A-Da-d]+$"}}
                ),
                "responses": {
                    "202": _json({"type": "object"}, "Queued"),
                    "404": _NOT_FOUND,
                    "409": _error("Ended, or no telephone-event negotiated"),
                    "422": _error("Bad digits"),
                },
            }
        },
        "/calls/{call_id}/say": {
            "post": {
                "summary": "Have the agent say a text (after its current speech, or instead)",
                "parameters": _CALL_ID,
                "requestBody": _body(
                    ["text"],
                    {
                        "text": {"type": "string", "minLength": 1, "maxLength": 2000},
                        "interrupt": {"type": "boolean", "default": False},
                    },
                ),
                "responses": {
                    "202": _json({"type": "object"}, "Queued"),
                    "404": _NOT_FOUND,
                    "409": _error("Ended, or the call's agent does not speak text"),
                    "422": _error("Empty or too long text, or a bad interrupt"),
                },
            }
        },
        "/calls/{call_id}/transfer": {
            "post": {
                "summary": "Blind transfer (REFER, RFC 3515)",
                "parameters": _CALL_ID,
                "requestBody": _body(["target"], {"target": {"type": "string"}}),
                "responses": {
                    "200": _json(_ref("TransferResult"), "Transferred (the call ends)"),
                    "404": _NOT_FOUND,
                    "409": _ENDED,
                    "502": _json(_ref("TransferResult"), "Refused (the call stays up)"),
                },
            }
        },
        "/calls/{call_id}/recording": {
            "get": {
                "summary": "The stereo WAV (caller left, agent right)",
                "parameters": _CALL_ID,
                "responses": {
                    "200": {
                        "description": "WAV",
                        "content": {
                            "audio/wav": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "404": _error("No recording"),
                },
            }
        },
        "/registrations": {
            "get": {
                "summary": "Provider accounts' registration states",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "registrations": {"type": "array", "items": _ref("Registration")}
                            },
                        },
                        "States",
                    )
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        # The built-in softphone (api/softphone.py): its page is open, its calls need the token.
        "/": {
            "get": {
                "summary": "The softphone page (no token; it asks for one when needed)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/webrtc/routes": {
            "get": {
                "summary": "The routes the softphone can call",
                "responses": {"200": _json({"type": "object"}, "Routes")},
            }
        },
        "/webrtc/offer": {
            "post": {
                "summary": "A WebRTC call: the browser's offer (all candidates) -> our answer",
                "requestBody": _body(
                    ["sdp", "type"],
                    {
                        "sdp": {"type": "string"},
                        "type": {"const": "offer"},
                        "route": {"type": "string", "default": "agent"},
                    },
                ),
                "responses": {
                    "200": _json({"type": "object"}, "The answer: {sdp, type, session}"),
                    "400": _error("Not an offer this gateway can answer"),
                    "404": _error("No such route"),
                    "429": _error("Too many calls"),
                    "503": _error("WebRTC off, or shutting down"),
                },
            }
        },
        # The live dashboard (api/dashboard.py): the page is open, its event stream is not.
        "/dashboard": {
            "get": {
                "summary": "The dashboard page (no token; it asks for one when needed)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/events": {
            "get": {
                "summary": "The gateway's call events, live (Server-Sent Events)",
                "description": "One `data:` line of JSON per event ({type, call_id, at, ...}: "
                "snapshot, call.started, call.answered, call.stats, call.ended, "
                "recording.ready, transcript.ready, transcript.partial, transcript.line, "
                "transcript.retracted, turn, barge_in, dropped) with an `id:`; send "
                "`Last-Event-ID` to resume. A client that falls behind is dropped.",
                "parameters": [
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "503": _error("Too many streams"),
                },
            }
        },
        "/webrtc/hangup": {
            "post": {
                "summary": "End a softphone call",
                "requestBody": _body(["session"], {"session": {"type": "string"}}),
                "responses": {"204": {"description": "Ended"}, "404": _error("No such session")},
            }
        },
    }
    for operations in paths.values():  # the body limits of api/limits.py apply to every POST
        post = operations.get("post")
        if post is None:
            continue
        responses = post["responses"]
        responses["413"] = _error("The body is larger than http.max_body_bytes")
        bad = responses.get("400", {}).get("description", "The body is not a JSON object")
        responses["400"] = _error(f"{bad}, or its JSON nests deeper than 32 levels")
    return {
        "openapi": "3.1.0",
        "info": {"title": "callbridge", "version": __version__},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "CALLBRIDGE_API_TOKEN; required when one is set",
                }
            },
            "schemas": {
                "Error": _ERROR,
                "Call": _CALL,
                "CallDetail": _CALL_DETAIL,
                "Registration": _REGISTRATION,
                "TransferResult": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "ok": {"type": "boolean"},
                        "status": {"type": ["integer", "null"]},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }


def openapi_routes() -> list[BaseRoute]:
    document = openapi_document()

    async def schema(request: Request) -> Response:
        return JSONResponse(document)

    return [Route("/openapi.json", schema, methods=["GET"])]
