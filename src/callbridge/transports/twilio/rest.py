"""Outbound calls through Twilio's REST API, with the official `twilio` package.

The package's client is synchronous (requests), so each request runs on a worker thread and
never blocks the event loop. `http_client` is the package's own HTTP hook (a
`twilio.http.HttpClient`): tests replace the network there and nowhere else.
"""

from __future__ import annotations

import asyncio
from typing import Any

from callbridge.core.errors import TransportError

__all__ = ["TwilioCallFailed", "TwilioRest"]


class TwilioCallFailed(TransportError):
    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(f"Twilio refused the call: {status or ''} {reason}".strip())
        self.status = status
        self.reason = reason


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, http_client: Any = None) -> None:
        from twilio.rest import Client  # type: ignore[import-untyped]

        self._client = Client(account_sid, auth_token, http_client=http_client)

    async def create_call(
        self, to: str, from_: str, twiml: str, status_callback: str | None = None
    ) -> str:
        """Place a call whose inline TwiML runs when it is answered; returns its call SID."""
        kwargs: dict[str, Any] = {"to": to, "from_": from_, "twiml": twiml}
        if status_callback:
            kwargs["status_callback"] = status_callback
        call = await self._run(self._client.calls.create, **kwargs)
        return str(call.sid)

    async def end_call(self, call_sid: str) -> None:
        """Hang up a live call (status `completed`)."""
        await self._run(self._client.calls(call_sid).update, status="completed")

    async def _run(self, fn: Any, **kwargs: Any) -> Any:
        from twilio.base.exceptions import TwilioException, TwilioRestException  # type: ignore[import-untyped]

        try:
            return await asyncio.to_thread(fn, **kwargs)
        except TwilioRestException as exc:
            raise TwilioCallFailed(exc.status, str(exc.msg)) from None
        except TwilioException as exc:
            raise TwilioCallFailed(None, str(exc)) from None
