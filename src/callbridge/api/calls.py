"""The REST API over calls: list, inspect, originate, control, recordings; registrations; metrics.

Routes are plain Starlette `Route`s handed to `create_app(extra_routes=...)`, so the app's
bearer-token guard covers every one of them. Errors are JSON `{"error": ..., "field"?: ...}`:
400 for a body that is not a JSON object (or nests too deep), 413 for one over the body limit
(api/limits.py), 422 for a bad field (named), 404 for an unknown call, 409 for a call that
already ended, 502/504 for what the far end answered. An error never echoes more than
MAX_ECHO_CHARS of any value the request sent.

With `serve --workers N`, an action on (or GET of) a call another worker holds live is that
worker's to answer: forwarded to its internal API, its answer returned as it is, 503 when it
does not answer (api/forward.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from callbridge.agents.local_audio import AudioDeviceError, LocalAudioAgent, open_device
from callbridge.api.forward import Forwarding, live_gateway
from callbridge.api.limits import MAX_ECHO_CHARS, BodyError, clip, read_json
from callbridge.api.observers import call_summary, registration_summary
from callbridge.calls.manager import Call, CallManager, Speaking
from callbridge.core import errors
from callbridge.core.errors import CallbridgeError
from callbridge.core.log import event
from callbridge.observability.metrics import CONTENT_TYPE, Metrics
from callbridge.store.db import MAX_QUERY_CHARS, CallRow, EventRow, TurnRow
from callbridge.transports.sip.transport import CallFailed, SipTransport

__all__ = ["ApiError", "CallsApi", "calls_routes"]

log = logging.getLogger("callbridge.api")

DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
MAX_LIMIT = 1000
MAX_SAY_CHARS = 2000  # about two minutes of speech
MAX_DTMF_DIGITS = 64  # at 0.2 s each, 13 s of tones
_MAX_MESSAGE_CHARS = 3 * MAX_ECHO_CHARS  # a message may quote a value or two, clipped


class ApiError(errors.ApiError):
    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any) -> None:
        # Messages may carry what the far end or a lower layer said about the request's values.
        message = clip(message, _MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.extra = {k: clip(v) if isinstance(v, str) else v for k, v in extra.items()}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return JSONResponse(body, status_code=self.status)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# Places a call through Twilio (to, agent, answer timeout) -> the started call's id; raises
# ApiError. Built by gateway.py, which knows the Twilio settings and REST client.
TwilioOriginate = Callable[[str, str, float], Awaitable[str]]


class _Answered(CallbridgeError):
    """Another worker answered the request (api/forward.py): its response, as it is."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _json_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except (ApiError, BodyError) as exc:
            return exc.response()
        except _Answered as answered:
            return answered.response

    wrapped.__doc__ = handler.__doc__
    wrapped.__name__ = handler.__name__
    return wrapped


async def _body(request: Request) -> dict[str, Any]:
    data = await read_json(request)  # BodyError: 400 / 413
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _string(data: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"{name} is required", name)
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"{name} must be a non-empty string", name)
    return value.strip()


def _row(row: CallRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "live": row.live,
        "transport": row.transport,
        "direction": row.direction,
        "from": row.from_uri,
        "to": row.to_uri,
        "agent": row.agent,
        "started": row.started,
        "answered": row.answered,
        "ended": row.ended,
        "end_reason": row.end_reason,
        "recording": row.recording_path is not None,
        "transcript": row.transcript_path is not None,
        "ids": dict(row.ids),
    }


def _live(call: Call) -> dict[str, Any]:
    s = call_summary(call)
    inbound = s["direction"] == "inbound"
    return {
        "id": call.id,
        "live": True,
        "transport": s["transport"],
        "direction": s["direction"],
        "from": s["remote_uri"] if inbound else s["local_user"],
        "to": s["local_user"] if inbound else s["remote_uri"],
        "agent": call.agent_name,
        "ids": s["ids"],
    }


def _matches(item: dict[str, Any], q: str) -> bool:
    """`q` in a live call the store does not hold (its transcript is not searched)."""
    needle = q.lower()
    return any(needle in str(item[k]).lower() for k in ("from", "to", "agent"))


def _event(row: EventRow) -> dict[str, Any]:
    return {"seq": row.seq, "ts": row.ts, "name": row.name, "data": dict(row.data)}


def _turn(row: TurnRow) -> dict[str, Any]:
    return {
        "utterance": row.utterance,
        "ts": row.ts,
        "user_text": row.user_text,
        "agent_text": row.agent_text,
        "interrupted": row.interrupted,
        "voice_to_voice_ms": row.voice_to_voice_ms,
        "stt_ms": row.stt_ms,
        "brain_ms": row.brain_ms,
        "tts_ms": row.tts_ms,
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(slots=True)
class CallsApi:
    calls: CallManager
    sip: SipTransport | None = None
    metrics: Metrics | None = None
    answer_timeout: float = 60.0
    twilio_originate: TwilioOriginate | None = None
    # serve --workers: worker 0 hands actions on the other workers' live calls to them
    forwarding: Forwarding | None = None
    # Hang-ups the API started: they wait for the BYE's answer, the HTTP response does not.
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    async def _live_call(self, request: Request) -> Call:
        call_id = request.path_params["call_id"]
        call = self.calls.calls.get(call_id)
        if call is not None:
            return call
        store = self.calls.store
        row = await store.db.get_call(call_id) if store is not None else None
        if row is None:
            raise ApiError(404, f"no call {clip(call_id)!r}")
        if row.live:
            await self._forward(request, call_id)
        raise ApiError(409, f"call {clip(call_id)!r} has ended")

    async def _forward(self, request: Request, call_id: str) -> None:
        """Raises _Answered with the answer of the worker that holds `call_id` live, when
        that is another worker of this cluster; returns when it is for this one to answer."""
        store = self.calls.store
        if self.forwarding is None or store is None:
            return
        gateway_id = await live_gateway(store.db, call_id)
        base = self.forwarding.target(request, gateway_id)
        if gateway_id is not None and base is not None:
            raise _Answered(await self.forwarding.forward(request, gateway_id, base))

    # ---- reading -------------------------------------------------------------------------------

    async def list_calls(self, request: Request) -> Response:
        """List calls, newest first. `?live=true|false` filters, `?limit=N` (default 100),
        `?q=TEXT` keeps the calls whose from/to, agent or transcript holds TEXT (any case;
        stored calls: among the newest store.db.SEARCH_WINDOW)."""
        raw = request.query_params.get("live")
        live: bool | None = None
        if raw is not None:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ApiError(422, "live must be true or false", "live")
            live = raw.lower() in ("true", "1")
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            raise ApiError(422, "limit must be an integer", "limit") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(422, f"limit must be between 1 and {MAX_LIMIT}", "limit")
        q = request.query_params.get("q", "").strip() or None
        if q is not None and len(q) > MAX_QUERY_CHARS:
            raise ApiError(422, f"q is longer than {MAX_QUERY_CHARS} characters", "q")
        items: list[dict[str, Any]] = []
        store = self.calls.store
        if store is not None:
            rows = await store.db.list_calls(live=live, limit=limit, q=q)
            items = [_row(r) for r in rows]
        seen = {i["id"] for i in items}
        if live is not False:  # live calls the store does not know (no store, or not yet)
            extra = [
                _live(c)
                for c in self.calls.calls.values()
                if c.id not in seen and (q is None or _matches(_live(c), q))
            ]
            items = (extra + items)[:limit]
        return JSONResponse({"calls": items})

    async def get_call(self, request: Request) -> Response:
        """One call: its summary, legs, events, turns and transcript (when stored)."""
        call_id = request.path_params["call_id"]
        live = self.calls.calls.get(call_id)
        store = self.calls.store
        row = await store.db.get_call(call_id) if store is not None else None
        if live is None and row is None:
            raise ApiError(404, f"no call {clip(call_id)!r}")
        if live is None and row is not None and row.live:  # its legs' live stats: another worker's?
            await self._forward(request, call_id)
        out: dict[str, Any] = _row(row) if row is not None else _live(live)  # type: ignore[arg-type]
        legs: list[dict[str, Any]] = []
        if live is not None:
            s = call_summary(live)
            legs.append(
                {
                    "transport": s["transport"],
                    "direction": s["direction"],
                    "local_user": s["local_user"],
                    "remote_uri": s["remote_uri"],
                    "ids": s["ids"],
                    "ended": live.leg.ended,
                    "stats": live.leg.stats(),
                }
            )
        elif row is not None:
            legs.append(
                {
                    "transport": row.transport,
                    "direction": row.direction,
                    "from": row.from_uri,
                    "to": row.to_uri,
                    "ids": dict(row.ids),
                    "ended": True,
                }
            )
        out["legs"] = legs
        out["events"], out["turns"], out["transcript"] = [], [], None
        if store is not None:
            out["events"] = [_event(e) for e in await store.db.events(call_id)]
            out["turns"] = [_turn(t) for t in await store.db.turns(call_id)]
            path = store.transcript_path(call_id)
            out["transcript"] = await asyncio.to_thread(_read_json, path)
        return JSONResponse(out)

    async def recording(self, request: Request) -> Response:
        """The call's stereo WAV (caller left, agent right); 404 when there is none."""
        call_id = request.path_params["call_id"]
        store = self.calls.store
        if store is None:
            raise ApiError(404, "recordings are off (no store)")
        path = store.recording_path(call_id)
        if not await asyncio.to_thread(path.is_file):
            raise ApiError(404, f"no recording for call {clip(call_id)!r}")
        return FileResponse(path, media_type="audio/wav", filename=f"{call_id}.wav")

    async def registrations(self, request: Request) -> Response:
        """Every provider account's registration state."""
        regs = self.sip.registrations() if self.sip is not None else []
        return JSONResponse({"registrations": [registration_summary(r) for r in regs]})

    async def metrics_text(self, request: Request) -> Response:
        """Prometheus metrics (text exposition format)."""
        if self.metrics is None:
            raise ApiError(404, "metrics are off")
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # ---- acting --------------------------------------------------------------------------------

    async def originate(self, request: Request) -> Response:
        """Place an outbound call with an agent: `{to, agent?, account?, via?}`, over SIP (a
        SIP URI, or a number through `account`'s trunk) or, with `via: "twilio"`, through
        Twilio's REST API (an E.164 number). Answers 202 with the call's id once the far end
        answered, or the status that refused it."""
        data = await _body(request)
        to = _string(data, "to", required=True)
        agent = _string(data, "agent", required=False)
        account = _string(data, "account", required=False)
        via = _string(data, "via", required=False) or "sip"
        listen = data.get("listen", False)
        ring = data.get("ring_timeout", self.answer_timeout)
        assert to is not None
        if isinstance(ring, bool) or not isinstance(ring, int | float) or not 1 <= ring <= 600:
            raise ApiError(422, "ring_timeout is seconds, 1 to 600", "ring_timeout")
        if not isinstance(listen, bool):
            raise ApiError(422, "listen must be true or false", "listen")
        if agent is not None and agent not in self.calls.router.agents:
            known = ", ".join(sorted(self.calls.router.agents))
            raise ApiError(422, f"unknown agent {clip(agent)!r} (one of {known})", "agent")
        if via not in ("sip", "twilio"):
            raise ApiError(422, 'via must be "sip" or "twilio"', "via")
        if via == "twilio":
            if listen:
                raise ApiError(422, "listen works with SIP calls", "listen")
            return await self._originate_twilio(to, agent, account)
        if self.sip is None:
            raise ApiError(503, "SIP is not running")
        self._room_for_a_call()
        if account is not None and account not in self.sip.accounts:
            raise ApiError(422, f"unknown account {clip(account)!r}", "account")
        speakers: LocalAudioAgent | None = None
        if listen:
            # The gateway machine's own speakers and microphone (a desk setup, not a server):
            # opened before dialling, so no call is placed that nobody can hear.
            try:
                stream = await asyncio.to_thread(open_device, None)
            except AudioDeviceError as exc:
                raise ApiError(409, str(exc), "listen") from None
            speakers = LocalAudioAgent(stream=stream)
        try:
            try:
                leg = await self.sip.call(to, account=account, timeout=float(ring))
            except BaseException:
                if speakers is not None:
                    speakers.discard()  # the device was opened for a call that never came
                raise
        except CallFailed as exc:
            event(log, "api.call_failed", logging.WARNING, to=to, result=exc.result,
                  status=exc.status, reason=exc.reason)  # fmt: skip
            if exc.status is None:
                status = 422 if exc.reason.startswith("bad target") else 502
                field_name = "to" if status == 422 else None
                raise ApiError(
                    status, exc.reason, field_name, sip_status=None, result=exc.result
                ) from None
            status = 504 if exc.status == 408 else 502
            raise ApiError(status, exc.reason, sip_status=exc.status, result=exc.result) from None
        if speakers is not None:
            call = self.calls.start_call(leg, agent=speakers, agent_name="listen")
            return JSONResponse({"id": call.id, "status": "answered"}, status_code=202)
        # The Request-URI user names the far end here, not our agent: default to the route's.
        call = self.calls.start_call(leg, agent_name=agent or self.calls.router.default)
        return JSONResponse({"id": call.id, "status": "answered"}, status_code=202)

    async def _originate_twilio(self, to: str, agent: str | None, account: str | None) -> Response:
        if account is not None:
            raise ApiError(422, "accounts are SIP trunks: not used with via twilio", "account")
        if self.twilio_originate is None:
            raise ApiError(503, "Twilio calling is not available in this gateway")
        self._room_for_a_call()
        call_id = await self.twilio_originate(
            to, agent or self.calls.router.default, self.answer_timeout
        )
        return JSONResponse({"id": call_id, "status": "answered"}, status_code=202)

    def _room_for_a_call(self) -> None:
        """The same admission as calls coming in: draining, the call limit, a saturated store."""
        refused = self.calls.refusal()
        if refused is not None:
            raise ApiError(503, refused.detail)

    async def hangup(self, request: Request) -> Response:
        """End a live call (BYE); answers 202 at once."""
        call = await self._live_call(request)
        task = asyncio.get_running_loop().create_task(call.leg.hangup("api"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return JSONResponse({"id": call.id, "status": "hanging_up"}, status_code=202)

    async def dtmf(self, request: Request) -> Response:
        """Send DTMF digits (RFC 4733): `{digits}` of 0-9 * # A-D."""
        call = await self._live_call(request)
        digits = _string(await _body(request), "digits", required=True)
        assert digits is not None
        if not set(digits) <= DTMF_DIGITS:
            raise ApiError(422, "digits may only hold 0-9, *, #, A-D", "digits")
        if len(digits) > MAX_DTMF_DIGITS:
            raise ApiError(422, f"digits: at most {MAX_DTMF_DIGITS} at a time", "digits")
        try:
            await call.leg.send_dtmf(digits)
        except ValueError as exc:
            raise ApiError(409, str(exc), "digits") from None
        return JSONResponse({"id": call.id, "digits": digits.upper()}, status_code=202)

    async def say(self, request: Request) -> Response:
        """Have the call's agent say `{text}`: after what it is saying now, or instead of it
        with `interrupt: true`. 202 once queued; 409 when the agent speaks no text (echo, an
        agent socket)."""
        call = await self._live_call(request)
        data = await _body(request)
        text = _string(data, "text", required=True)
        assert text is not None
        if not text.strip():
            raise ApiError(422, "text is empty", "text")
        if len(text) > MAX_SAY_CHARS:
            raise ApiError(422, f"text is longer than {MAX_SAY_CHARS} characters", "text")
        interrupt = data.get("interrupt", False)
        if not isinstance(interrupt, bool):
            raise ApiError(422, "interrupt must be true or false", "interrupt")
        agent: object = call.agent  # any agent; some also speak text
        if not isinstance(agent, Speaking):
            raise ApiError(409, f"the call's agent ({call.agent_name}) does not speak text", "text")
        try:
            await agent.say(text, interrupt=interrupt)
        except RuntimeError as exc:
            raise ApiError(409, str(exc)) from None
        event(log, "api.say", call_id=call.id, chars=len(text), interrupt=interrupt)
        return JSONResponse({"id": call.id, "text": text, "interrupt": interrupt}, status_code=202)

    async def transfer(self, request: Request) -> Response:
        """Blind transfer (SIP REFER): `{target}`. 200 when the transfer went through (the call
        then ends), 502 with the reason when it did not (the call stays up)."""
        call = await self._live_call(request)
        target = _string(await _body(request), "target", required=True)
        assert target is not None
        result = await call.leg.transfer(target)
        body = {"id": call.id, "ok": result.ok, "status": result.status, "reason": result.reason}
        return JSONResponse(body, status_code=200 if result.ok else 502)

    def routes(self) -> list[BaseRoute]:
        r = _json_errors
        return [
            Route("/calls", r(self.list_calls), methods=["GET"]),
            Route("/calls", r(self.originate), methods=["POST"]),
            Route("/calls/{call_id}", r(self.get_call), methods=["GET"]),
            Route("/calls/{call_id}/hangup", r(self.hangup), methods=["POST"]),
            Route("/calls/{call_id}/dtmf", r(self.dtmf), methods=["POST"]),
            Route("/calls/{call_id}/transfer", r(self.transfer), methods=["POST"]),
            Route("/calls/{call_id}/say", r(self.say), methods=["POST"]),
            Route("/calls/{call_id}/recording", r(self.recording), methods=["GET"]),
            Route("/registrations", r(self.registrations), methods=["GET"]),
            Route("/metrics", r(self.metrics_text), methods=["GET"]),
        ]


def calls_routes(
    calls: CallManager,
    sip: SipTransport | None = None,
    metrics: Metrics | None = None,
    twilio_originate: TwilioOriginate | None = None,
    forwarding: Forwarding | None = None,
) -> list[BaseRoute]:
    return CallsApi(
        calls, sip, metrics, twilio_originate=twilio_originate, forwarding=forwarding
    ).routes()
