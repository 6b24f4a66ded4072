"""Calls placed through Twilio's REST API, for the CLI (`callbridge call --via twilio`) and the
HTTP API (POST /calls with `via: twilio`).

In the composition layer, not in cli/: the HTTP API the composition root builds places these
calls too, and the composition root never imports the CLI."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from callbridge.api.twilio import media_stream_url
from callbridge.config.settings import Settings
from callbridge.core.errors import ConfigError
from callbridge.core.log import event
from callbridge.transports.twilio.leg import TwilioLeg
from callbridge.transports.twilio.rest import TwilioCallFailed, TwilioRest
from callbridge.transports.twilio.transport import TwilioTransport
from callbridge.twilio_streams import twiml

log = logging.getLogger("callbridge")


def check_twilio_call_settings(settings: Settings) -> None:
    """What `callbridge call --via twilio` needs; raises ConfigError naming the first gap."""
    t = settings.twilio
    needs = [
        ("twilio.account_sid", t.account_sid, "TWILIO_ACCOUNT_SID"),
        ("twilio.auth_token", t.auth_token, "TWILIO_AUTH_TOKEN"),
        ("twilio.from_number", t.from_number, "CALLBRIDGE_TWILIO_FROM_NUMBER (a Twilio number)"),
        ("public_url", settings.public_url, "CALLBRIDGE_PUBLIC_URL (where Twilio reaches us)"),
    ]
    for name, value, env in needs:
        if not value:
            raise ConfigError(name, f"calling through Twilio needs it: set {env}")


async def twilio_originate(
    settings: Settings,
    transport: TwilioTransport,
    target: str,
    agent_name: str,
    *,
    http_client: Any = None,
    answer_timeout: float = 90.0,
) -> TwilioLeg:
    """A call through Twilio's REST API whose media comes back on our WebSocket: the leg,
    once the stream is connected (the transport has started the call with `agent_name`).
    Raises TwilioCallFailed (logged as call.failed) when refused or never connected."""
    t = settings.twilio
    rest = TwilioRest(t.account_sid, t.auth_token, http_client=http_client)
    document = twiml.connect_stream(
        media_stream_url(settings.public_url),
        {"agent": agent_name, "direction": "outbound", "from": t.from_number, "to": target},
    )
    try:
        call_sid = await rest.create_call(target, t.from_number, document)
    except TwilioCallFailed as exc:
        event(
            log, "call.failed", logging.ERROR, target=target, status=exc.status, reason=exc.reason
        )
        raise
    event(log, "twilio.call_created", call_sid=call_sid, target=target, agent=agent_name)
    try:
        return await transport.wait_for_stream(call_sid, answer_timeout)
    except TimeoutError:
        event(
            log,
            "call.failed",
            logging.ERROR,
            target=target,
            call_sid=call_sid,
            reason="no media stream",
        )
        with contextlib.suppress(TwilioCallFailed):
            await rest.end_call(call_sid)
        raise TwilioCallFailed(None, "no media stream (not answered in time)") from None
