"""`callbridge call`: start the gateway, place one call (SIP, or through Twilio) with an agent
or this machine's speakers and microphone, and wait for it to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from callbridge.agents.local_audio import LocalAudioAgent, open_device
from callbridge.calls.manager import Call
from callbridge.cli.serve import until_signal
from callbridge.config.settings import Settings
from callbridge.core.errors import ConfigError
from callbridge.core.log import event
from callbridge.gateway import Gateway, build_gateway
from callbridge.originate import check_twilio_call_settings, twilio_originate
from callbridge.transports.sip.leg import SipLeg
from callbridge.transports.sip.transport import CallFailed
from callbridge.transports.twilio.leg import TwilioLeg
from callbridge.transports.twilio.rest import TwilioCallFailed

log = logging.getLogger("callbridge")


async def _twilio_call(
    gateway: Gateway, target: str, agent_name: str, http_client: Any, answer_timeout: float
) -> TwilioLeg | None:
    """Create the call over REST with <Connect><Stream> TwiML and wait for its media stream."""
    assert gateway.twilio is not None
    try:
        return await twilio_originate(
            gateway.settings,
            gateway.twilio,
            target,
            agent_name,
            http_client=http_client,
            answer_timeout=answer_timeout,
        )
    except TwilioCallFailed:
        return None  # logged


async def place_call(
    settings: Settings,
    target: str,
    agent_name: str,
    duration: float | None,
    *,
    via: str = "sip",
    account: str | None = None,
    twilio_http_client: Any = None,
    answer_timeout: float = 90.0,
    listen: str | None = None,
) -> int:
    """`callbridge call`: start the gateway, place one call with an agent, wait for it to end.

    `listen` (a device name, "" for the default) puts the call on this machine's speakers and
    microphone instead of an agent; the device is opened before anything is dialled, so a
    machine without one gets AudioDeviceError, not a call nobody hears.

    `via="twilio"` places it through Twilio's REST API (`twilio_http_client` replaces the
    twilio package's HTTP client); the call's media then comes back on our WebSocket."""
    if via == "twilio":
        if listen is not None:
            raise ConfigError("--listen", "works with SIP calls (not --via twilio)")
        check_twilio_call_settings(settings)
    device = open_device(listen or None) if listen is not None else None
    gateway = build_gateway(settings, http=True if via == "twilio" else None)
    await gateway.start()
    ended: asyncio.Future[Call] = asyncio.get_running_loop().create_future()

    def on_end(call: Call) -> None:
        if not ended.done():
            ended.set_result(call)

    gateway.calls.on_end.append(on_end)
    signals = asyncio.ensure_future(until_signal())
    try:
        leg: SipLeg | TwilioLeg
        if via == "twilio":
            attempt = asyncio.ensure_future(
                _twilio_call(gateway, target, agent_name, twilio_http_client, answer_timeout)
            )
            await asyncio.wait({attempt, signals}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                attempt.cancel()
                return 1
            placed = attempt.result()
            if placed is None:
                return 1
            leg = placed  # the transport started the call with the agent named in the TwiML
        else:
            you = LocalAudioAgent(listen or None, stream=device) if device is not None else None
            try:
                leg = await gateway.sip.call(
                    target,
                    account=account,
                    timeout=answer_timeout,
                    on_early_media=you.early if you else None,
                )
            except CallFailed as exc:
                event(
                    log,
                    "call.failed",
                    logging.ERROR,
                    target=target,
                    result=exc.result,
                    status=exc.status,
                    reason=exc.reason,
                )
                if you is not None:
                    you.discard()
                return 1
            if you is not None:
                gateway.calls.start_call(leg, agent=you, agent_name="listen")
            else:
                gateway.calls.start_call(leg, agent_name=agent_name)
        waits: set[asyncio.Future[object]] = {ended, signals}  # type: ignore[arg-type]
        if duration is not None:
            waits.add(asyncio.ensure_future(asyncio.sleep(duration)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not leg.ended:
            await leg.hangup("local")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await ended
        return 0
    finally:
        signals.cancel()
        await gateway.stop()
