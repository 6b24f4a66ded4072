"""The caller side of the voice-agent peer tests, for when the test must react to what the
caller hears (speak 1.5 s into the agent's answer) or echo the agent back:

- CallerMedia: a scriptable RTP endpoint (PCMU, 20 ms, optional attenuated echo);
- VoiceCaller: SIPp places the call (signalling by a real peer), its SDP offers the
  CallerMedia port, and the test tells it when to hang up;
- WireTap: a live view of the RTP sent to a real softphone (baresip), on loopback.

Every wait has a deadline; audio is timed by the endpoint's own 20 ms clock.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .audio import RATE, Pcm, g711_decode, ulaw_encode
from .callbridge import CallbridgeProcess
from .capture import Capture, read_rtp, start_capture
from .process import LOOPBACK, PORT_BLOCKS, ProcessRegistry, free_port, wait_until
from .sipp import SippRun, start_uac
from .speech import FRAME, FRAME_S, TimedFrame, timed_frames, wire_segments

# --------------------------------------------------------------------------- caller media


@dataclass(frozen=True, slots=True)
class RecvPacket:
    time: float  # time.time() at arrival (comparable with capture timestamps)
    pt: int
    seq: int
    timestamp: int
    payload: bytes
    source: tuple[str, int]


@dataclass(frozen=True, slots=True)
class SentFrame:
    time: float  # time.time() when sent
    pcm: Pcm


DTMF_KEYS = "0123456789*#ABCD"  # RFC 4733 §3.2: events 0-15


@dataclass(slots=True)
class _KeyPress:
    """One RFC 4733 key press being sent: a packet per 20 ms instead of audio."""

    digit: str
    timestamp: int  # RTP timestamp of the whole event (that of its first packet)
    samples: int  # its duration
    sent: int = 0  # packets sent so far

    @property
    def updates(self) -> int:
        return -(-self.samples // FRAME)

    def next_packet(self, pt: int, seq: int, ssrc: int) -> bytes:
        """RFC 4733 §2.5.1: marker on the first packet, one timestamp, the duration growing,
        the final packet (E bit) sent three times, each with its own sequence number."""
        n = self.sent
        self.sent += 1
        duration = min((n + 1) * FRAME, self.samples)
        end = n >= self.updates - 1
        header = struct.pack(
            "!BBHII", 0x80, (0x80 if n == 0 else 0) | pt, seq, self.timestamp, ssrc
        )
        flags = (0x80 if end else 0) | 10  # E bit, volume -10 dBm0
        return header + struct.pack("!BBH", DTMF_KEYS.index(self.digit), flags, duration)

    @property
    def done(self) -> bool:
        return self.sent >= self.updates + 2


@dataclass(eq=False)
class CallerMedia:
    """A caller's RTP endpoint on 127.0.0.1: sends PCMU every 20 ms (silence unless a clip
    is playing, like a phone without silence suppression), records what arrives, and can
    echo what it receives back at `echo_gain` (e.g. 0.1 = -20 dB), mixed with its own voice.

    A thread paces the packets on its own absolute 20 ms grid; `play` schedules clips on it.
    """

    port: int
    echo_gain: float = 0.0
    received: list[RecvPacket] = field(default_factory=list)
    sent: list[SentFrame] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _remote: tuple[str, int] | None = None
    _clips: list[tuple[float, Pcm]] = field(default_factory=list)  # (start time, samples)
    _echo: list[Pcm] = field(default_factory=list)
    _frames: list[TimedFrame] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sock: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    # RFC 4733 key presses (`dtmf()`): the payload type the call negotiated (the SDP of
    # the DTMF caller scenario offers 101), and (time.time() of the first packet, digit).
    dtmf_pt: int = 101
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)
    _keys: list[tuple[float, str, int]] = field(default_factory=list)  # (at, digit, ms)
    _press: _KeyPress | None = None

    def start(self) -> CallerMedia:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, self.port))
        sock.settimeout(0.1)
        self._sock = sock
        for target in (self._recv_loop, self._send_loop):
            th = threading.Thread(
                target=target, name=f"caller-media-{target.__name__}", daemon=True
            )
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> CallerMedia:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_remote(self, host: str, port: int) -> None:
        with self._lock:
            self._remote = (host, port)

    def play(self, pcm: Pcm, at: float | None = None) -> float:
        """Schedule `pcm` to be sent from `at` (time.time(); default now). Returns the start."""
        start = time.time() if at is None else at
        with self._lock:
            self._clips.append((start, np.asarray(pcm, dtype=np.int16)))
        return start

    def frames(self) -> list[TimedFrame]:
        """What arrived so far (PCMU), decoded."""
        with self._lock:
            return list(self._frames)

    def dtmf(self, digit: str, at: float | None = None, duration_ms: int = 100) -> float:
        """Press `digit` from `at` (time.time(); default now) as RFC 4733 telephone-events
        (payload type `dtmf_pt`, which the call's SDP must have offered): while it lasts its
        packets replace the audio packets, as a phone's do. Returns the start."""
        assert digit in DTMF_KEYS, digit
        start = time.time() if at is None else at
        with self._lock:
            self._keys.append((start, digit, duration_ms))
            self._keys.sort()
        return start

    def _dtmf_packet(self, now: float, seq: int, ts: int, ssrc: int) -> bytes | None:
        """The telephone-event packet to send instead of audio at `now`, if a key is down."""
        with self._lock:
            if self._press is None and self._keys and self._keys[0][0] <= now:
                _, digit, ms = self._keys.pop(0)
                self._press = _KeyPress(digit, ts, round(ms * RATE / 1000))
                self.dtmf_sent.append((now, digit))
            press = self._press
            if press is None:
                return None
            packet = press.next_packet(self.dtmf_pt, seq, ssrc)
            if press.done:
                self._press = None
            return packet

    def _recv_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stop.is_set():
                    self.errors.append(f"recv: {exc}")
                return
            now = time.time()
            rtp = parse_rtp(data)
            if rtp is None:
                continue
            pkt = RecvPacket(now, *rtp, (addr[0], addr[1]))
            pcm = g711_decode(pkt.payload, 0) if pkt.pt == 0 else None
            with self._lock:
                self.received.append(pkt)
                if pcm is not None:
                    self._frames.append(TimedFrame.of(now, pcm, pkt.timestamp))
                    if self.echo_gain:
                        self._echo.append(pcm)

    def _next_frame(self, now: float) -> Pcm:
        out = np.zeros(FRAME, dtype=np.float64)
        with self._lock:
            live = []
            for start, clip in self._clips:
                i = round((now - start) * RATE)
                if i >= len(clip):
                    continue
                live.append((start, clip))
                if i + FRAME > 0:
                    a, b = max(0, i), min(len(clip), i + FRAME)
                    out[a - i : b - i] += clip[a:b]
            self._clips = live
            if self._echo:
                # One received frame of echo per frame sent, like a phone's jitter buffer
                # playing into its microphone: a burst is played out, not dropped; only a
                # backlog beyond 200 ms (which would add delay for good) is cut.
                del self._echo[:-10]
                echo = self._echo.pop(0)
                out[: len(echo)] += self.echo_gain * echo[:FRAME].astype(np.float64)
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)

    def _send_loop(self) -> None:
        assert self._sock is not None
        ssrc = random.getrandbits(32)
        seq = random.getrandbits(16)
        ts = random.getrandbits(32)
        t0 = time.monotonic()
        n = 0
        first = True
        while not self._stop.is_set():
            target = t0 + n * FRAME_S
            delay = target - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            n += 1
            with self._lock:
                remote = self._remote
            if remote is None:
                continue
            now = time.time()
            pcm = self._next_frame(now)
            header = struct.pack("!BBHII", 0x80, 0x80 if first else 0x00, seq, ts, ssrc)  # PT 0
            packet = header + ulaw_encode(pcm)
            key = self._dtmf_packet(now, seq, ts, ssrc)
            if key is not None:
                packet, pcm = key, np.zeros(FRAME, dtype=np.int16)
            try:
                self._sock.sendto(packet, remote)
            except OSError as exc:
                self.errors.append(f"send: {exc}")
            first = False
            seq = (seq + 1) & 0xFFFF
            ts = (ts + FRAME) & 0xFFFFFFFF
            with self._lock:
                self.sent.append(SentFrame(now, pcm))


class FrameSource(Protocol):
    def frames(self) -> list[TimedFrame]: ...


def wait_for_sound(
    media: FrameSource,
    *,
    after: float,
    timeout: float,
    what: str,
    min_s: float = 0.2,
) -> float:
    """Arrival time of the first received frame after `after` that starts `min_s` of sound."""

    def check() -> float | None:
        segs = wire_segments([f for f in media.frames() if f.time >= after])
        long_enough = [s for s in segs if s.length >= min_s]
        return long_enough[0].start if long_enough else None

    return wait_until(check, timeout, what, interval=0.05)


def wait_for_quiet(
    media: FrameSource, *, after: float, quiet_s: float, timeout: float, what: str
) -> float:
    """End time of the last sound received after `after` (or `after` itself if none came),
    once `quiet_s` passed since then without sound (arrival gaps count as quiet: the gateway
    sends nothing when it has nothing to say)."""

    def check() -> float | None:
        segs = wire_segments([f for f in media.frames() if f.time >= after])
        end = segs[-1].end if segs else after
        return end if time.time() - end >= quiet_s else None

    return wait_until(check, timeout, what, interval=0.05)


def wait_for_speech_end(
    gateway: CallbridgeProcess,
    media: FrameSource,
    call_id: str,
    utterance: int,
    *,
    quiet_s: float = 1.0,
    timeout: float = 30.0,
    may_be_cut: bool = False,
) -> float:
    """When the agent's `utterance` stopped on the wire. Its agent.turn is logged once all of
    it was synthesised and queued (then the queue drains), its agent.barge_in when it was
    cut: a pause between two clauses (synthesis falling behind) is never taken for the end.
    A cut utterance fails the wait unless `may_be_cut`."""
    start = time.monotonic()

    def logged() -> float | None:
        if not gateway.proc.running():
            raise AssertionError(f"callbridge exited:\n{gateway.stderr_tail()}")
        cut = gateway.events("agent.barge_in", call_id=call_id, utterance=utterance)
        if cut and not may_be_cut:
            raise AssertionError(f"the agent's utterance {utterance} was cut: {cut[0]}")
        done = cut or gateway.events("agent.turn", call_id=call_id, utterance=utterance)
        return float(done[0]["ts"]) if done else None

    at = wait_until(logged, timeout, f"agent.turn / agent.barge_in of utterance {utterance}")
    left = max(1.0, timeout - (time.monotonic() - start))
    return wait_for_quiet(
        media, after=at, quiet_s=quiet_s, timeout=left,
        what=f"the end of the agent's utterance {utterance} on the wire",
    )  # fmt: skip


# --------------------------------------------------------------------------- wire tap


def parse_rtp(data: bytes) -> tuple[int, int, int, bytes] | None:
    """(payload type, sequence number, timestamp, payload) of an RTP packet (RFC 3550 §5.1)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    off = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= off + 4:  # §5.3.1 header extension
        off += 4 + 4 * struct.unpack("!H", data[off + 2 : off + 4])[0]
    end = len(data) - (data[-1] if data[0] & 0x20 else 0)
    if off > end:
        return None
    seq, ts = struct.unpack("!HI", data[2:8])
    return data[1] & 0x7F, seq, ts, data[off:end]


@dataclass(eq=False)
class WireTap:
    """A live view of the RTP sent on loopback to UDP ports `lo_port`..`hi_port` (for tests
    whose caller is a real softphone that cannot tell us what it hears while it hears it).
    AF_PACKET on "lo", like tshark (root); each datagram is kept once (not its outgoing copy).
    """

    lo_port: int
    hi_port: int
    packets: list[RecvPacket] = field(default_factory=list)
    _frames: list[TimedFrame] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> WireTap:
        eth_p_ip = 0x0800
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(eth_p_ip))
        sock.bind(("lo", eth_p_ip))
        sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._loop, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def __enter__(self) -> WireTap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def frames(self) -> list[TimedFrame]:
        """What was sent to the ports so far (PCMU), decoded."""
        with self._lock:
            return list(self._frames)

    def _loop(self, sock: socket.socket) -> None:
        packet_outgoing = 4
        with sock:
            while not self._stop.is_set():
                try:
                    data, addr = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                if addr[2] == packet_outgoing or len(data) < 28 or data[9] != 17:
                    continue
                ihl = 4 * (data[0] & 0x0F)
                sport, dport = struct.unpack("!HH", data[ihl : ihl + 4])
                if not self.lo_port <= dport <= self.hi_port:
                    continue
                rtp = parse_rtp(data[ihl + 8 :])
                if rtp is None:
                    continue
                src = socket.inet_ntoa(data[12:16])
                pkt = RecvPacket(time.time(), *rtp, (src, sport))
                frame = (
                    TimedFrame.of(pkt.time, g711_decode(pkt.payload, 0), pkt.timestamp)
                    if pkt.pt == 0
                    else None
                )
                with self._lock:
                    self.packets.append(pkt)
                    if frame is not None:
                        self._frames.append(frame)


# --------------------------------------------------------------------------- SIPp caller

CALLER_SCENARIO = (
    Path(__file__).resolve().parents[2] / "fixtures" / "voice" / "uac_external_media.xml"
)


@dataclass(eq=False)
class VoiceCaller:
    """A call placed by SIPp whose media is a CallerMedia of the test; hung up on demand."""

    sipp: SippRun
    media: CallerMedia
    remote: tuple[str, int]

    @property
    def sip_call_id(self) -> str:
        # SIPp's Call-ID is "<call#>-<pid>@<local ip>" (its -cid_str default "%u-%p@%s").
        return f"1-{self.sipp.proc.pid}@{LOOPBACK}"

    def hang_up(self, timeout: float = 10.0) -> int:
        """Tell SIPp to send its BYE (an INFO in the call: see the scenario); returns its
        exit code (0: the call was set up and ended by us, with nothing unexpected)."""
        if self.sipp.proc.running():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((LOOPBACK, 0))
                info = "\r\n".join([
                    f"INFO sip:caller@{LOOPBACK}:{self.sipp.sip_port} SIP/2.0",
                    f"Via: SIP/2.0/UDP {LOOPBACK}:{s.getsockname()[1]}"
                    f";branch=z9hG4bK-hangup-{os.getpid()};rport",
                    "Max-Forwards: 70",
                    f"From: <sip:test@{LOOPBACK}>;tag=hangup",
                    f"To: <sip:caller@{LOOPBACK}>",
                    f"Call-ID: {self.sip_call_id}",
                    "CSeq: 1 INFO",
                    "Content-Length: 0", "", "",
                ])  # fmt: skip
                s.sendto(info.encode(), (LOOPBACK, self.sipp.sip_port))
        return self.sipp.wait(timeout)


def start_voice_caller(
    registry: ProcessRegistry,
    gateway: tuple[str, int],
    media: CallerMedia,
    *,
    service: str = "agent",
    name: str = "caller",
    timeout_s: int = 90,
    scenario: Path = CALLER_SCENARIO,
) -> VoiceCaller:
    """SIPp calls sip:<service>@gateway offering `media`'s port; returns once the call is
    answered and `media` sends to the address of the 200 OK's SDP."""
    (registry.workdir / name / "remote_media.txt").unlink(missing_ok=True)
    sipp = start_uac(
        registry, name, str(scenario), target=gateway, service=service,
        sip_port=free_port(), media_port=PORT_BLOCKS.take(4)[0], timeout_s=timeout_s,
        extra=["-key", "rtp_port", str(media.port)],
    )  # fmt: skip
    path = sipp.workdir / "remote_media.txt"

    def answered() -> tuple[str, int] | None:
        if not sipp.proc.running():
            raise AssertionError(f"SIPp ended before the call was answered:\n{sipp.describe()}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            fields = path.read_text().split()
            if fields[-1] == "end":  # written completely
                return fields[0], int(fields[1])
        return None

    remote = wait_until(answered, 15.0, "the 200 OK to SIPp's INVITE")
    media.set_remote(*remote)
    return VoiceCaller(sipp, media, remote)


# --------------------------------------------------------------------------- call + capture


@dataclass(frozen=True, slots=True)
class CallAudio:
    """Both directions of a call's audio as captured on the wire (one clock: the capture's)."""

    agent: list[TimedFrame]  # gateway -> caller
    caller: list[TimedFrame]  # caller -> gateway


@dataclass(eq=False)
class VoiceCall:
    caller: VoiceCaller
    capture: Capture
    gateway: CallbridgeProcess

    @property
    def media(self) -> CallerMedia:
        return self.caller.media

    def call_id(self, timeout: float = 5.0) -> str:
        """The gateway's call_id for this call (from its call.started event)."""
        ev = self.gateway.wait_for(
            "call.started", timeout=timeout, sip_call_id=self.caller.sip_call_id
        )
        return str(ev[0]["call_id"])

    def audio(self) -> CallAudio:
        """Stop the capture (everything sent so far is in it) and decode both directions."""
        pcap = self.capture.stop()
        lo, hi = self.gateway.config.rtp_range
        port = self.media.port
        gw_src = f"udp.srcport >= {lo} && udp.srcport <= {hi}"
        gw_dst = f"udp.dstport >= {lo} && udp.dstport <= {hi}"
        return CallAudio(
            agent=timed_frames(read_rtp(pcap, f"{gw_src} && udp.dstport == {port}"), 0),
            caller=timed_frames(read_rtp(pcap, f"{gw_dst} && udp.srcport == {port}"), 0),
        )


def start_voice_call(
    registry: ProcessRegistry,
    gateway: CallbridgeProcess,
    media: CallerMedia,
    service: str = "agent",
) -> VoiceCall:
    """Capture (tshark, both directions), then SIPp calls `service` with `media` as its RTP."""
    lo, hi = gateway.config.rtp_range
    cap = start_capture(
        registry,
        "tshark",
        f"udp and (port {gateway.config.sip_port} or portrange {lo}-{hi} or port {media.port})",
    )
    caller = start_voice_caller(registry, gateway.sip_addr, media, service=service)
    return VoiceCall(caller, cap, gateway)
