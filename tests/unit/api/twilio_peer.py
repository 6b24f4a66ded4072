"""A minimal Twilio for in-process tests: opens the media WebSocket (signed like Twilio signs
it), sends the handshake and caller audio, echoes marks, and collects what the app sends."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import websockets
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callbridge.twilio_streams.messages import Connected, Mark, Media, Start, Stop, dumps


class FakeTwilioStream:
    def __init__(
        self,
        connect_url: str,
        *,
        signed_url: str,
        auth_token: str,
        call_sid: str,
        params: dict[str, str],
    ) -> None:
        self.connect_url = connect_url
        self.signature = RequestValidator(auth_token).compute_signature(signed_url, {})
        self.stream_sid = "MZ" + "5" * 32
        self.account_sid = "AC" + "6" * 32
        self.call_sid = call_sid
        self.params = params
        self.received: list[dict[str, Any]] = []
        self._seq = 1
        self._ws: Any = None

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    async def __aenter__(self) -> FakeTwilioStream:
        self._ws = await websockets.connect(
            self.connect_url, additional_headers={"X-Twilio-Signature": self.signature}
        )
        await self._ws.send(dumps(Connected()))
        await self._ws.send(
            dumps(
                Start(
                    1,
                    self.stream_sid,
                    self.account_sid,
                    self.call_sid,
                    custom_parameters=self.params,
                )
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()

    async def send_audio(self, frames: list[bytes]) -> None:
        """µ-law frames, all at once (as after a network stall): timestamps place them."""
        for n, payload in enumerate(frames):
            msg = Media(self._next(), self.stream_sid, "inbound", n + 1, 20 * n, payload)
            await self._ws.send(dumps(msg))

    async def stop(self) -> None:
        await self._ws.send(
            dumps(Stop(self._next(), self.stream_sid, self.account_sid, self.call_sid))
        )

    async def collect(self, media_bytes: int, timeout: float = 10.0) -> bytes:
        """Receive until `media_bytes` of audio came back, echoing every mark at once."""
        audio = bytearray()
        async with asyncio.timeout(timeout):
            while len(audio) < media_bytes:
                msg = json.loads(await self._ws.recv())
                self.received.append(msg)
                if msg["event"] == "media":
                    audio += base64.b64decode(msg["media"]["payload"])
                elif msg["event"] == "mark":
                    echo = Mark(self._next(), self.stream_sid, msg["mark"]["name"])
                    await self._ws.send(dumps(echo))
        return bytes(audio)

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Read until the app closes the socket; its close code."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    self.received.append(json.loads(await self._ws.recv()))
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
