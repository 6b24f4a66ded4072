"""The ASGI app (Starlette): health, the API, and Twilio's webhooks and media WebSocket.

`create_app()` is the factory later issues extend (REST /calls, live events): add routes to
`extra_routes`. API routes need the bearer token when one is configured; `/healthz` is open
(load balancers) and Twilio's routes are authenticated by Twilio's signature, never by token.
Every request body, on every route, is bounded by `max_body_bytes` (413, api/limits.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from callbridge import __version__
from callbridge.api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from callbridge.api.twilio import TwilioWebConfig, twilio_routes
from callbridge.calls.manager import CallManager
from callbridge.transports.twilio.transport import TwilioTransport

__all__ = ["ApiConfig", "BearerTokenGuard", "create_app"]

# The softphone and dashboard pages and their assets hold no data; what they do (/webrtc/*,
# /events, the API) needs the token. SIP over WebSocket (/sip) is authenticated by SIP digest
# and the SIP ACLs, as UDP SIP is (a browser's WebSocket cannot send a bearer token).
OPEN_PATHS = ("/healthz", "/", "/dashboard", "/sip")
TWILIO_PREFIX = "/twilio/"
ASTERISK_PREFIX = "/asterisk/"  # chan_websocket authenticates with Basic (api/asterisk.py)
ASSETS_PREFIX = "/app/"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    api_token: str = field(default="", repr=False)
    twilio: TwilioWebConfig = TwilioWebConfig()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class BearerTokenGuard:
    """ASGI middleware: `Authorization: Bearer <token>` on every route but the open ones."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        open_paths: Iterable[str] = OPEN_PATHS,
        open_prefixes: Iterable[str] = (TWILIO_PREFIX, ASSETS_PREFIX, ASTERISK_PREFIX),
    ) -> None:
        self.app = app
        self.token = token.encode("utf-8")
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)

    def _open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or not self.token
            or self._open(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        scheme, _, value = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8"), self.token
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": ""})  # -> HTTP 403
            return
        response = JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def create_app(
    config: ApiConfig,
    *,
    calls: CallManager | None = None,
    twilio: TwilioTransport | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    async def healthz(request: Request) -> Response:
        if calls is not None and not calls.accepting:
            return JSONResponse({"status": "stopping"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def status(request: Request) -> Response:
        return JSONResponse(
            {
                "version": __version__,
                "accepting": calls.accepting if calls is not None else False,
                "live_calls": len(calls.calls) if calls is not None else 0,
                "twilio_streams": len(twilio.legs) if twilio is not None else 0,
            }
        )

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        *twilio_routes(config.twilio, twilio),
        *extra_routes,
    ]
    # The body limit is outermost: it holds for the open routes (Twilio's) too.
    middleware = [
        Middleware(BodyLimit, max_bytes=config.max_body_bytes),
        Middleware(BearerTokenGuard, token=config.api_token),
    ]
    return Starlette(routes=routes, middleware=middleware)
