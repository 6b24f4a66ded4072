"""The built-in softphone: its page at `/` (static files under callbridge/web/static, served
as they are: plain HTML, CSS and JS, no CDN) and its signalling, `POST /webrtc/offer` and
`POST /webrtc/hangup`, plus `GET /webrtc/routes` for the page's buttons.

Signalling is one request: the page gathers its candidates first and posts the whole offer;
the answer comes back with ours (non-trickle; transports.webrtc). The page and its assets
hold no data and are open (api/app.py OPEN_PATHS); `/webrtc/*` is behind the API token when
one is set: the page asks for the token in a login form, keeps it in sessionStorage and
sends it as `Authorization: Bearer` (never in a URL, which access logs would keep).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from callbridge.core.log import event
from callbridge.core.ports import Rejection
from callbridge.transports.webrtc.transport import BadOffer, WebRtcTransport

__all__ = ["ASSETS_PREFIX", "PAGE_PATHS", "STATIC_DIR", "webrtc_routes"]

log = logging.getLogger("callbridge.api.softphone")

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
ASSETS_PREFIX = "/app/"  # the page's scripts and styles (open: they hold no data)
PAGE_PATHS = ("/",)
_MAX_OFFER_BODY = 64 * 1024
_STATUS = {Rejection.NOT_FOUND: 404, Rejection.BUSY: 429, Rejection.UNAVAILABLE: 503}
# Only our own files, no inline script: a page that takes a token must not run injected code.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> dict[str, object] | None:
    body = await request.body()
    if len(body) > _MAX_OFFER_BODY:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def webrtc_routes(transport: WebRtcTransport | None, routes: Sequence[str]) -> list[BaseRoute]:
    """The page, its assets and its signalling. `routes`: the names the page offers to call
    ("agent", "echo", each `[agents.NAME]`); None transport: the page shows, calls get 503."""
    names = list(dict.fromkeys(routes))

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    async def list_routes(request: Request) -> Response:
        return JSONResponse({"routes": names, "webrtc": transport is not None})

    async def offer(request: Request) -> Response:
        data = await _json(request)
        if data is None:
            return _error(400, "expected a JSON object {sdp, type, route}")
        sdp, kind, route = data.get("sdp"), data.get("type"), data.get("route", "agent")
        if not isinstance(sdp, str) or kind != "offer" or not isinstance(route, str):
            return _error(400, "expected sdp (string), type 'offer' and route (string)")
        if route not in names:
            return _error(404, f"no route {route!r}; routes: {', '.join(names)}")
        if transport is None:
            return _error(503, "WebRTC is not available")
        remote = f"{request.client.host}:{request.client.port}" if request.client else ""
        try:
            session, answer = await transport.offer(sdp, route, remote)
        except Rejection as rej:
            event(log, "call.rejected", transport="webrtc", route=route, reason=rej.kind)
            return _error(_STATUS.get(rej.kind, 503), str(rej))
        except BadOffer as exc:
            event(log, "webrtc.bad_offer", logging.WARNING, remote=remote, reason=str(exc))
            return _error(400, str(exc))
        return JSONResponse({"sdp": answer, "type": "answer", "session": session})

    async def hangup(request: Request) -> Response:
        data = await _json(request)
        session = data.get("session") if data is not None else None
        if not isinstance(session, str):
            return _error(400, "expected a JSON object {session}")
        if transport is None or not await transport.hangup(session):
            return _error(404, "no such session")
        return Response(status_code=204)

    return [
        Route("/", page, methods=["GET"]),
        Mount(ASSETS_PREFIX.rstrip("/"), StaticFiles(directory=STATIC_DIR), name="app"),
        Route("/webrtc/routes", list_routes, methods=["GET"]),
        Route("/webrtc/offer", offer, methods=["POST"]),
        Route("/webrtc/hangup", hangup, methods=["POST"]),
    ]
