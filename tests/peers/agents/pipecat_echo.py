"""An external agent built on Pipecat, as someone who wrote it for Twilio would: Pipecat's
`TwilioFrameSerializer` on Pipecat's WebSocket server transport, with a trivial pipeline that
echoes the caller. callbridge connects to it (playing Twilio) for the agent-socket peer test.

What the test can steer, by DTMF (RFC 4733 from the SIP caller, `dtmf` on the socket):
- `9`: send TONE_S seconds of a 440 Hz tone at once, as agents that forward a speech model's
  output do (the OpenAI realtime samples send each delta as it comes): Pipecat's serializer
  encodes each 20 ms as a `media` message and its transport sends them as urgent messages,
  past its real-time pacing of pipeline audio. callbridge then holds seconds of audio, as
  Twilio would;
- `#`: interrupt: Pipecat's interruption drops its own output and its serializer sends `clear`.

Every event the test checks is a JSON line on stdout with the wall-clock time it happened:
{"t": <time.time()>, "event": "start" | "dtmf" | "tone" | "clear" | "stop" | ...}.

Run: python pipecat_echo.py --port 8765 (until SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
)
from pipecat.workers.runner import WorkerRunner

RATE = 8000
TONE_S = 6.0
TONE_CHUNK_S = 0.02


def report(event: str, **fields: Any) -> None:
    print(json.dumps({"t": time.time(), "event": event, **fields}), flush=True)


class StreamSerializer(TwilioFrameSerializer):
    """Pipecat's serializer learns the streamSid from `start` itself.

    Pipecat's own runner reads `connected`/`start` off the socket before it builds the
    serializer with the streamSid; on the generic server transport every message goes to the
    serializer, so this takes the streamSid (and reports the events the test checks) there.
    The media, DTMF and clear handling is Pipecat's, untouched."""

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            msg = json.loads(data)
        except ValueError:
            report("bad_json")
            return None
        event = msg.get("event") if isinstance(msg, dict) else None
        if event == "start":
            self._stream_sid = msg["streamSid"]
            report("start", message=msg)
        elif event == "connected":
            report("connected", message=msg)
        elif event == "stop":
            report("stop", message=msg)
        elif event == "media" and msg.get("media", {}).get("chunk") == "1":
            report("first_media", message=msg)
        return await super().deserialize(data)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        out = await super().serialize(frame)
        if isinstance(frame, InterruptionFrame) and out:
            report("clear", text=out)
        return out


class EchoBot(FrameProcessor):
    """Caller audio straight back; DTMF steers it (see the module docstring)."""

    def __init__(self, serializer: TwilioFrameSerializer) -> None:
        super().__init__()
        self.serializer = serializer

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio, sample_rate=frame.sample_rate, num_channels=1
                )
            )
        elif isinstance(frame, InputDTMFFrame):
            digit = frame.button.value
            report("dtmf", digit=digit)
            if digit == "9":
                await self._tone()
            elif digit == "#":
                report("interrupt")
                await self.broadcast_interruption()
        else:
            await self.push_frame(frame, direction)

    async def _tone(self) -> None:
        n = round(TONE_CHUNK_S * RATE)
        t = np.arange(round(TONE_S * RATE)) / RATE
        tone = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()
        for i in range(0, len(tone), 2 * n):
            audio = OutputAudioRawFrame(audio=tone[i : i + 2 * n], sample_rate=RATE, num_channels=1)
            text = await self.serializer.serialize(audio)  # Pipecat's Twilio `media` message
            assert isinstance(text, str)
            await self.push_frame(OutputTransportMessageUrgentFrame(message=json.loads(text)))
        report("tone", seconds=TONE_S)


async def main(port: int) -> None:
    serializer = StreamSerializer(
        stream_sid="", params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    transport = SingleClientWebsocketServerTransport(
        params=SingleClientWebsocketServerParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            allowed_origins=[],
        ),
        host="127.0.0.1",
        port=port,
    )

    @transport.event_handler("on_websocket_ready")
    async def on_ready(_transport: Any) -> None:
        report("listening", port=port)

    @transport.event_handler("on_client_connected")
    async def on_connected(_transport: Any, websocket: Any) -> None:
        headers = dict(websocket.request.headers.raw_items())
        report("client_connected", path=websocket.request.path, headers=headers)

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(_transport: Any, websocket: Any) -> None:
        report("client_disconnected", code=websocket.close_code)

    pipeline = Pipeline([transport.input(), EchoBot(serializer), transport.output()])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    await WorkerRunner(handle_sigint=True, handle_sigterm=True).run(worker)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
    sys.exit(0)
