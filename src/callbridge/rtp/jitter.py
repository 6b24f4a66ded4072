"""Time-based adaptive jitter buffer: decoded RTP payloads in, continuous 20 ms frames out.

Sans-IO: `push()` on every packet, `pop()` once per frame, both given the monotonic `now`.
Received audio sits on a sample timeline keyed by the extended (unwrapped, RFC 3550 A.1) RTP
timestamp, with a cursor at the next sample to play (sample_timeline). Every pop yields exactly one frame: received samples, or
`Concealer` output (G.711 Appendix I) for the ones that are missing.

Playout point (playout_clock): the sample with timestamp `ts` should play at
`(ts + base) / rate + target`, where `base` is the smallest recent transit and `target`
follows the measured jitter (RFC 3550 §6.4.1) and recent delay spikes, within
[min_delay, max_delay]. A frame whose end lies in a later packet than its start (30 ms
packets, or after a pitch-sized drop) also waits for that packet (`_lead`). Each `pop()`
compares where the cursor is with where it should be (`err`, in samples) and closes the
gap gradually, never with a jump in the waveform:

- too deep (`err` > 1.25 frames): drop a frame while the signal is quiet, or skip the
  silent gap before a talk-spurt (marker bit, RFC 3551 §4.1); beyond 2 frames, also
  while talking, remove one pitch period with a cross-fade (rate-limited);
- too shallow (`err` < 0): insert a concealed frame while quiet or at a talk-spurt
  start; beyond -1/8 frame, also while talking (rate-limited).

So the delay stays within [target, target + 1.25 frames] when there are pauses to adjust
in, and a little wider during continuous speech. Because the error is measured against
the sender's timestamps, a sender clock running fast or slow only makes `err` drift, and
the same mechanism absorbs it: no drift.

`pop()` returns None before the first packet, while the first packet waits for its
playout time, and once the source has been silent for `stall_timeout` with nothing left
to play (hold, DTX, hang-up); the next packet restarts playout on a fresh anchor. A new
SSRC, or a sequence/timestamp discontinuity, re-anchors too, but the old stream's
unplayed tail is re-keyed to end where the new stream starts, so nothing stalls.
"""

from __future__ import annotations

import math
from enum import Enum, auto

import numpy as np
import numpy.typing as npt

from callbridge.audio.levels import energy
from callbridge.audio.plc import Concealer, best_lag
from callbridge.core.frames import AudioFrame
from callbridge.rtp.jitter_config import JitterConfig, JitterStats
from callbridge.rtp.playout_clock import PlayoutClock
from callbridge.rtp.sample_timeline import SampleTimeline

__all__ = ["JitterBuffer", "JitterConfig", "JitterStats"]

_SEEN_MEMORY = 1024  # sequence numbers remembered for duplicate detection
_NEVER = -(1 << 60)  # an empty slot: no extended sequence number is this (they start near 0)
_FORCED_INTERVAL = 5  # pops between adjustments made while the signal is not quiet
_QUIET_DBFS = -40.0  # frames below this are always "quiet"
_QUIET_REL = 0.01  # ... and so are frames 20 dB below the recent peak frame energy
_LEVEL_DECAY = 0.995  # per frame: the peak tracker halves in ~140 frames (2.8 s)
_LEVEL_EVERY = 4  # frames between level samples


class _State(Enum):
    IDLE = auto()  # no packet yet
    PRIMING = auto()  # waiting until the first sample is due
    PLAYING = auto()
    STALLED = auto()  # the source went quiet: pop() returns None until it resumes


def _wrap16(d: int) -> int:
    return ((d + 0x8000) & 0xFFFF) - 0x8000


def _wrap32(d: int) -> int:
    return ((d + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


def _mean_square(pcm: bytes) -> float:
    """`_energy` of PCM16 bytes, without an array (one C loop with the native build)."""
    n = len(pcm) // 2
    return energy(pcm) / n if n else 0.0


def _energy(x: npt.NDArray[np.int16]) -> float:
    f = x.astype(np.float64)
    return float(f @ f) / len(f) if len(f) else 0.0


class JitterBuffer:
    def __init__(self, config: JitterConfig | None = None) -> None:
        cfg = config or JitterConfig()
        self._cfg = cfg
        rate = cfg.clock_rate
        self._frame = cfg.frame_samples
        self._pitch_min = rate * 5 // 1000
        self._pitch_max = rate * 15 // 1000
        self._hard_skip = 8 * self._frame  # beyond this surplus, jump rather than drain
        self._quiet_abs = (32768.0 * 10 ** (_QUIET_DBFS / 20)) ** 2
        # Per-packet constants, looked up once.
        self._rate = rate
        self._deep = self._frame + self._frame // 4  # "too deep" threshold of pop()
        self._seq_jump = cfg.resync_seq_jump
        self._ts_jump = cfg.resync_ts_jump * cfg.clock_rate
        self._stall_timeout = cfg.stall_timeout
        self._clock = PlayoutClock(
            rate,
            cfg.min_delay,
            cfg.max_delay,
            base_window=cfg.base_window,
            spike_window=cfg.spike_window,
            jitter_factor=cfg.jitter_factor,
        )
        self._plc = Concealer(rate)
        self._stats = JitterStats()
        self._state = _State.IDLE
        self._audible = False  # whether a PRIMING pop conceals (mid-stream) or returns None
        self._tl = SampleTimeline()
        # Stream identity and sequence/timestamp unwrapping (RFC 3550 A.1).
        self._ssrc: int | None = None
        self._old_ssrc: int | None = None
        self._resync_at = 0.0
        self._max_seq16 = 0
        self._max_ext_seq = 0
        self._ref_ts32 = 0
        self._ref_ext_ts = 0
        # Duplicates: slot ext_seq % _SEEN_MEMORY holds the latest number received there (one
        # list read and write per packet; a set with a deque to forget by was five operations).
        self._seen: list[int] = [_NEVER] * _SEEN_MEMORY
        self._pending: tuple[int, int, bytes, bool, float] | None = None
        self._last_arrival = 0.0
        self._grid = 0  # start timestamp and length of the newest packet: the packet grid
        self._ptime = cfg.frame_samples
        self._grid_step = math.gcd(self._frame, self._ptime)  # kept equal to gcd(frame, ptime)
        self._late_streak = 0
        self._cooldown = 0
        self._level = 0.0  # sampled, decaying peak frame energy
        self._last_pcm = b""
        self._last_was_quiet: bool | None = None
        self._slack = math.inf  # smallest err of the pops since take_slack() (samples)
        self._slack_pops = 0

    @property
    def stats(self) -> JitterStats:
        """A snapshot (the buffer keeps counting into its own copy)."""
        s, rate = self._stats, self._cfg.clock_rate
        return JitterStats(
            received=s.received,
            duplicates=s.duplicates,
            late=s.late,
            reordered=s.reordered,
            lost=s.lost,
            resyncs=s.resyncs,
            frames_out=s.frames_out,
            inserted=s.inserted,
            dropped=s.dropped,
            target_delay=self._clock.target / rate,
            delay=s.delay,
            depth=self._depth() / rate,
            jitter=self._clock.jitter / rate,
        )

    # -- input -----------------------------------------------------------------------

    def push(  # noqa: PLR0917 - the positional signature is the module contract
        self,
        ssrc: int,
        sequence: int,
        timestamp: int,
        pcm: bytes,
        now: float,
        marker: bool = False,
    ) -> None:
        """Accept one decoded payload (PCM16 LE at clock_rate, any length)."""
        self._stats.received += 1
        n = len(pcm)
        if n < 2:
            return
        if n & 1:
            pcm = pcm[:-1]
        sequence &= 0xFFFF
        timestamp &= 0xFFFF_FFFF
        if ssrc == self._ssrc:  # the common case first: the stream we are playing
            dseq = ((sequence - self._max_seq16 + 0x8000) & 0xFFFF) - 0x8000  # _wrap16
            if dseq > self._seq_jump or dseq < -self._seq_jump:
                # RFC 3550 A.1: believe a big sequence jump only once the next packet
                # follows it; a lone stray packet is dropped.
                pending = self._pending
                if pending is None or sequence != (pending[0] + 1) & 0xFFFF:
                    self._pending = (sequence, timestamp, pcm, marker, now)
                    return
                self._pending = None
                self._begin(ssrc, pending[0], pending[1], pending[4], resync=True)
                self._accept(*pending)
            else:
                self._pending = None
                dts = _wrap32(timestamp - self._ref_ts32)
                if abs(dts) > self._ts_jump:
                    self._begin(ssrc, sequence, timestamp, now, resync=True)
        elif self._ssrc is None:
            self._begin(ssrc, sequence, timestamp, now, resync=False)
        else:
            if ssrc == self._old_ssrc and now - self._resync_at < self._cfg.ssrc_holdoff:
                self._stats.late += 1  # a straggler of the stream we just switched away from
                return
            self._begin(ssrc, sequence, timestamp, now, resync=True)
        self._accept(sequence, timestamp, pcm, marker, now)

    def _begin(self, ssrc: int, sequence: int, timestamp: int, now: float, resync: bool) -> None:
        """Start a new stream whose first packet has these numbers."""
        if resync:
            self._stats.resyncs += 1
            if ssrc != self._ssrc:
                self._old_ssrc = self._ssrc
                self._resync_at = now
        self._ssrc = ssrc
        self._max_seq16 = self._max_ext_seq = sequence
        self._ref_ts32 = self._ref_ext_ts = timestamp
        self._seen = [_NEVER] * _SEEN_MEMORY
        self._pending = None
        self._late_streak = 0
        self._clock.reanchor()
        tail_end = self._tl.end
        match self._state:
            case _State.PLAYING if tail_end is not None:
                # Re-key the unplayed tail of the old stream to end where the new one
                # starts: it plays out while the new stream fills, no gap and no stall.
                self._tl.shift(timestamp - tail_end)
            case _State.PLAYING | _State.PRIMING:
                self._prime(timestamp, audible=True)
            case _State.IDLE | _State.STALLED:
                self._prime(timestamp, audible=False)

    def _prime(self, timestamp: int, audible: bool) -> None:
        self._tl.reset(timestamp)
        self._state = _State.PRIMING
        self._audible = audible

    def _accept(self, sequence: int, timestamp: int, pcm: bytes, marker: bool, now: float) -> None:
        st = self._stats
        dseq = ((sequence - self._max_seq16 + 0x8000) & 0xFFFF) - 0x8000  # _wrap16
        ext_seq = self._max_ext_seq + dseq
        seen = self._seen
        slot = ext_seq % _SEEN_MEMORY
        if seen[slot] == ext_seq:
            st.duplicates += 1
            return
        seen[slot] = ext_seq
        if dseq < 0:
            st.reordered += 1
        else:
            self._max_seq16 = sequence
            self._max_ext_seq = ext_seq
        dts = ((timestamp - self._ref_ts32 + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000  # _wrap32
        ts = self._ref_ext_ts + dts
        if dts >= 0:
            if dts:
                self._ref_ts32 = timestamp
                self._ref_ext_ts = ts
            self._grid = ts
            ptime = len(pcm) // 2
            if ptime != self._ptime:
                self._ptime = ptime
                self._grid_step = math.gcd(self._frame, ptime)
        self._last_arrival = now

        state = self._state
        clock = self._clock
        if state is _State.STALLED:
            # The source resumed (hold, DTX): its timestamps may have moved on arbitrarily.
            clock.reanchor()
            self._prime(ts, audible=False)
            state = _State.PRIMING
        clock.observe(now, ts)

        tl = self._tl
        pos = tl.pos
        if state is _State.PRIMING:
            if ts < pos:
                tl.pos = ts
        elif ts < pos:  # PLAYING: (some of) these samples were already due
            st.late += 1
            self._late_streak += 1
            if self._late_streak >= self._cfg.max_late:
                # Persistently late: the path got slower than the window minimum admits.
                # Re-anchor on this packet and re-prime (concealing meanwhile).
                self._late_streak = 0
                clock.reanchor(path_changed=True)
                clock.observe(now, ts)
                self._state = _State.PRIMING
                tl.pos = ts
            else:
                usable = ts + len(pcm) // 2 - pos
                if usable <= 0:
                    return
                pcm = pcm[-2 * usable :]
                ts = pos
        else:
            self._late_streak = 0
        tl.insert(ts, pcm, marker)

    # -- output ----------------------------------------------------------------------

    def pop(self, now: float, late: float = 0.0) -> AudioFrame | None:
        """The next frame_samples samples, or None when there is nothing to play. `late`:
        how long after the consumer's schedule (`now - late`) this pop comes: a leg's place
        in a long media pass, or the whole pass running behind.

        Either way the lateness is the consumer's, not the network's, so it never makes the
        buffer adjust. Playout starts on the first pop whose schedule finds the first frame
        due: started on a late pop, the punctual pops after it would find their frames not
        yet due and insert 20 ms for the rest of the call. A frame is too early to play
        (insert) only if it is not due even at `now`, and too late (drop) only if it was
        overdue already at the schedule: the media clock runs the passes it owes back to
        back, so audio dropped to catch up a late pass would leave those passes short (and
        insert again). The slack is measured at the schedule too, so a busy moment is not
        mistaken for room to pop earlier."""
        if late < 0.0:  # noqa: PLR1730 - no builtin call per frame
            late = 0.0
        match self._state:
            case _State.PLAYING:  # the common case first
                pass
            case _State.PRIMING:
                if self._clock.position(now - late) < self._tl.pos + self._lead():
                    if not self._audible:
                        return None
                    self._stats.lost += 1
                    return self._emit(self._plc.conceal(self._frame), concealed=True)
                self._state = _State.PLAYING
                self._audible = True
            case _State.IDLE | _State.STALLED:
                return None
        if now - self._last_arrival > self._stall_timeout and self._depth() <= 0:
            self._state = _State.STALLED
            self._audible = False
            return None
        clock = self._clock
        err = clock.position(now) - self._tl.pos - self._lead()  # samples overdue at `now`
        due = err - late * self._rate  # ... and at the schedule (<= err)
        self._stats.delay = (err + clock.target) / self._rate
        if err >= 0 and due <= self._deep:
            # Within the band _adjust_and_render leaves alone: just play the next frame.
            if self._cooldown:
                self._cooldown -= 1
            if due < self._slack:  # noqa: PLR1730 - no builtin call per frame
                self._slack = due
            self._slack_pops += 1
            pcm, concealed, lost = self._render(self._frame)
        else:
            self._slack_pops = 0  # an adjustment moves the playout point: measure afresh
            self._slack = math.inf
            pcm, concealed, lost = self._adjust_and_render(err if err < 0 else due)
        if lost:
            self._stats.lost += 1
        return self._emit(pcm, concealed)

    def take_slack(self, pops: int) -> float | None:
        """How long (s) after it was due the most punctual of the last `pops` or more frames
        was popped, then start counting again; None until that many frames played within the
        band (an adjustment restarts the count).

        The consumer pops on its own schedule, so every frame waits from when it is due (the
        fastest recent packet's arrival plus the target delay) until the next pop: the slack.
        A consumer that pops that much earlier loses nothing (no frame would have been
        late) and takes that much delay off the call."""
        if self._slack_pops < pops:
            return None
        slack = self._slack / self._rate
        self._slack = math.inf
        self._slack_pops = 0
        return slack

    def _emit(self, pcm: bytes, concealed: bool) -> AudioFrame:
        st = self._stats
        frames_out = st.frames_out = st.frames_out + 1
        self._last_pcm = pcm
        self._last_was_quiet = None
        if frames_out % _LEVEL_EVERY == 0:  # a sampled peak level is plenty, and cheap
            e = _mean_square(pcm)
            self._level = max(e, self._level * _LEVEL_DECAY**_LEVEL_EVERY)
        return AudioFrame(pcm, self._rate, concealed)

    def _quiet(self, energy: float) -> bool:
        return energy < max(self._quiet_abs, _QUIET_REL * self._level)

    def _last_quiet(self) -> bool:
        """Whether the frame just played was quiet (computed once, only when deciding)."""
        if self._last_was_quiet is None:
            e = _mean_square(self._last_pcm)
            self._last_was_quiet = self._quiet(e)
        return self._last_was_quiet

    def _adjust_and_render(self, err: float) -> tuple[bytes, bool, bool]:
        """One frame, after at most one delay adjustment. Returns (pcm, concealed, lost)."""
        f = self._frame
        st = self._stats
        if self._cooldown:
            self._cooldown -= 1
        if err > self._hard_skip:
            # Far too deep (start-up transit spike, stalled consumer): jump, and splice
            # with a little concealment so the jump does not click.
            skip = int(err)
            self._tl.take(skip)
            st.dropped += skip
            splice = f // 4
            st.inserted += splice
            head = self._plc.conceal(splice)
            pcm, _, lost = self._render(f - splice)
            return head + pcm, True, lost
        if err > f + f // 4:
            if self._skip_silent_gap(int(err)):
                return self._render(f)
            if self._last_quiet():
                x = self._tl.peek(2 * f)
                if x is not None and self._quiet(_energy(x)):
                    return self._compress(x, f, f // 4, at=0), False, False
            if err > 2 * f and not self._cooldown:
                lo, hi, n = self._pitch_min, self._pitch_max, f // 2
                x = self._tl.peek(f + hi)
                if x is not None:
                    # Remove one pitch-like period k where the waveform repeats best:
                    # cross-fade x[hi-k : hi] into x[hi : hi+k], the windows compared.
                    k = lo + best_lag(x[: hi + n].astype(np.float64), n, lo, hi)
                    self._cooldown = _FORCED_INTERVAL
                    return self._compress(x[: f + k], k, k, at=hi - k), False, False
        elif err < 0:
            if self._last_quiet():
                x = self._tl.peek(f)
                if x is None or self._at_talkspurt() or self._quiet(_energy(x)):
                    st.inserted += f
                    return self._plc.conceal(f), True, False
            if err < -f / 8 and not self._cooldown:
                # A whole frame keeps the frame grid aligned with the packet grid.
                self._cooldown = _FORCED_INTERVAL
                st.inserted += f
                return self._plc.conceal(f), True, False
        return self._render(f)

    def _render(self, n: int) -> tuple[bytes, bool, bool]:
        """Play the next n samples, concealing gaps. Returns (pcm, concealed, lost)."""
        parts = self._tl.take(n)
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return self._plc.good(parts[0]), False, False
        out: list[bytes] = []
        run: list[bytes] = []
        lost = False
        for part in parts:
            if isinstance(part, bytes):
                run.append(part)
                continue
            if run:
                out.append(self._plc.good(b"".join(run)))
                run.clear()
            out.append(self._plc.conceal(part))
            lost = True
        if run:
            out.append(self._plc.good(b"".join(run)))
        return b"".join(out), lost, lost

    def _compress(self, x: npt.NDArray[np.int16], k: int, overlap: int, at: int) -> bytes:
        """Play len(x) - k samples for len(x): drop x[at : at+k] with a cross-fade."""
        f = x.astype(np.float64)
        up = np.arange(1, overlap + 1) / (overlap + 1)
        fade = f[at : at + overlap] * (1.0 - up) + f[at + k : at + k + overlap] * up
        y = np.concatenate((f[:at], fade, f[at + k + overlap :]))
        pcm = np.minimum(np.maximum(np.rint(y), -32768.0), 32767.0).astype("<i2").tobytes()
        self._tl.take(len(x))
        self._stats.dropped += k
        return self._plc.good(pcm)

    def _skip_silent_gap(self, err: int) -> bool:
        """At a talk-spurt start after silence, shorten the silence instead of speech."""
        nxt = self._tl.next_chunk()
        if nxt is None:
            return False
        start, marker = nxt
        if not marker or start <= self._tl.pos or not self._last_quiet():
            return False
        skip = min(start - self._tl.pos, err)
        self._tl.take(skip)
        self._stats.dropped += skip
        return True

    def _at_talkspurt(self) -> bool:
        nxt = self._tl.next_chunk()
        return nxt is not None and nxt[1] and nxt[0] == self._tl.pos

    # -- helpers ---------------------------------------------------------------------

    def _lead(self) -> int:
        """How far past `_pos` the packet completing the coming frames starts, worst case.

        A sample arrives with its packet, so a frame whose end lies in a later packet than
        its start waits for that packet. Over successive frames the offset of the packet
        grid within the frame runs through the multiples of gcd(frame, ptime); the worst
        one decides (0 when 20 ms packets line up with 20 ms frames, 10 ms for 30 ms
        packets).
        """
        f = self._frame
        return f - 1 - (self._tl.pos + f - 1 - self._grid) % self._grid_step

    def _depth(self) -> int:
        return self._tl.depth if self._state is _State.PLAYING else 0
