"""The aiortc peer: one RTCPeerConnection with its outbound track, data channel and events.

transport.py negotiates the connection (the offer, codec preferences, the answer); what the
leg then drives through its MediaPeer port lives here: the agent's audio as an outbound track
the RTP sender pulls, the browser's decoded audio as PCM16 mono, the data channel's messages
and the connection's state changes as PeerEvents, and the stats and close that end a call.
Kept apart so the transport reads as sessions and signalling, not as aiortc callbacks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions

import av
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from callbridge.transports.webrtc.cycles import release_cycles
from callbridge.transports.webrtc.leg import PeerClosed, PeerEvent, PeerMessage, PeerState

__all__ = ["AiortcPeer", "OutboundTrack", "mono_pcm"]


class OutboundTrack(MediaStreamTrack):
    """The agent's audio as an aiortc track: the leg's ticks push 20 ms frames, the RTP sender
    pulls them. The queue is shallow (a flush drops at most `depth` frames that the leg no
    longer holds), so pacing is the leg's; when the sender falls behind, the oldest go."""

    kind = "audio"

    def __init__(self, rate: int, depth: int) -> None:
        super().__init__()
        self.rate = rate
        self.depth = depth
        self.dropped = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._ready = asyncio.Event()
        self._pts = 0
        self._time_base = fractions.Fraction(1, rate)

    def push(self, pcm: bytes) -> None:
        if len(self._queue) >= self.depth:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(pcm)
        self._ready.set()

    def clear(self) -> int:
        n = len(self._queue)
        self._queue.clear()
        return n

    async def recv(self) -> av.AudioFrame:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        pcm = self._queue.popleft()
        samples = len(pcm) // 2
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += samples
        return frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # a waiting recv() sees the end


def mono_pcm(frame: av.AudioFrame) -> bytes:
    """A decoded frame (aiortc gives packed s16, Opus as stereo) as PCM16 mono bytes."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    mono = arr[0] if frame.format.is_planar else arr.reshape(-1)[::channels]
    if mono.dtype != np.int16:  # float formats: not what aiortc's decoders give, but cheap
        mono = np.clip(np.rint(mono.astype(np.float64) * 32767), -32768, 32767)
    return mono.astype("<i2").tobytes()


class AiortcPeer:
    """A negotiated RTCPeerConnection as the leg's MediaPeer."""

    def __init__(self, pc: RTCPeerConnection, outbound: OutboundTrack, codec: str) -> None:
        self.pc = pc
        self.outbound = outbound
        self._codec = codec
        self._events: asyncio.Queue[PeerEvent | None] = asyncio.Queue()
        self._track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self._channel: RTCDataChannel | None = None
        self._closed = False
        self.connected = asyncio.Event()
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_state)

    # ---- aiortc's callbacks

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._track.done():
            self._track.set_result(track)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("message", self._on_message)

    def _on_message(self, message: object) -> None:
        if isinstance(message, str):
            self._events.put_nowait(PeerMessage(message))
        else:  # binary: not ours; the leg counts it as a bad message
            self._events.put_nowait(PeerMessage(""))

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        self._events.put_nowait(PeerState(state))
        if state in ("closed", "failed"):
            self.connected.set()  # whoever waits for the connection sees it will not come

    # ---- MediaPeer

    @property
    def sample_rate(self) -> int:
        return self.outbound.rate

    @property
    def codec(self) -> str:
        return self._codec

    def send(self, pcm: bytes) -> None:
        self.outbound.push(pcm)

    def clear(self) -> int:
        return self.outbound.clear()

    async def receive(self) -> bytes:
        if self._closed:
            raise PeerClosed
        track = await self._track
        try:
            frame = await track.recv()
        except MediaStreamError:
            raise PeerClosed from None
        assert isinstance(frame, av.AudioFrame)
        pcm = mono_pcm(frame)
        if frame.sample_rate != self.sample_rate:  # a decoder at another rate: not aiortc's
            pcm = _convert_rate(pcm, frame.sample_rate, self.sample_rate)
        return pcm

    async def next_event(self) -> PeerEvent:
        ev = await self._events.get()
        if ev is None:
            raise PeerClosed
        return ev

    def send_message(self, text: str) -> None:
        channel = self._channel
        if channel is not None and channel.readyState == "open":
            with contextlib.suppress(Exception):  # the transport may be closing under us
                channel.send(text)

    async def stats(self) -> dict[str, int | float]:
        report = await self.pc.getStats()
        out: dict[str, int | float] = {}
        clock_rate = 48000 if self._codec == "opus" else 8000
        for s in report.values():
            match s.type:
                case "inbound-rtp":
                    out["rtp_packets_in"] = s.packetsReceived
                    out["rtp_packets_lost"] = s.packetsLost
                    # RFC 3550 §6.4.1 interarrival jitter, in RTP timestamp units
                    out["jitter_ms"] = round(1000 * s.jitter / clock_rate, 2)
                case "outbound-rtp":
                    out["rtp_packets_out"] = s.packetsSent
                    out["rtp_bytes_out"] = s.bytesSent
                case "remote-inbound-rtp":
                    out["remote_packets_lost"] = s.packetsLost
                    out["rtt_ms"] = round(1000 * s.roundTripTime, 1)
                case "transport":
                    out["bytes_in"] = s.bytesReceived
                    out["bytes_out"] = s.bytesSent
        out["frames_dropped_out"] = self.outbound.dropped
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.outbound.stop()
        self._events.put_nowait(None)
        if not self._track.done():
            self._track.cancel()
        await self.pc.close()
        release_cycles(self.pc)  # else the call's media graph waits for a full collection


def _convert_rate(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    from callbridge.audio.resample import resample

    return resample(pcm, rate_in, rate_out, quality="LQ")
