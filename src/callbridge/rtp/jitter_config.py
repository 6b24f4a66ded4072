"""The jitter buffer's settings and its counters (rtp.jitter uses them; sans-IO)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JitterConfig", "JitterStats"]


@dataclass(frozen=True, slots=True)
class JitterConfig:
    clock_rate: int = 8000
    frame_samples: int = 160
    min_delay: float = 0.010  # target delay range (s) beyond the fastest recent packet
    max_delay: float = 0.060
    max_late: int = 10  # consecutive late packets that mean the path got slower: re-anchor
    resync_seq_jump: int = 100  # |sequence jump| treated as a new stream (RFC 3550 A.1)
    resync_ts_jump: float = 2.0  # |timestamp jump| (s) treated as a new stream
    stall_timeout: float = 1.0  # no packets for this long and nothing buffered: pop() -> None
    ssrc_holdoff: float = 0.5  # after an SSRC change, packets of the old SSRC are dropped
    base_window: float = 2.0  # window (s) of the minimum-transit estimate
    spike_window: float = 10.0  # delay spikes keep the target up for this long (s)
    jitter_factor: float = 3.0  # target >= jitter_factor * RFC 3550 jitter

    def __post_init__(self) -> None:
        if self.clock_rate <= 0 or self.frame_samples <= 0:
            raise ValueError("clock_rate and frame_samples must be positive")
        if self.frame_samples < self.clock_rate * 15 // 1000:  # time-stretch cuts whole periods
            raise ValueError("frame_samples must cover at least 15 ms (the longest pitch period)")
        if not 0 <= self.min_delay <= self.max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        if self.max_late < 1 or self.resync_seq_jump < 1 or self.resync_ts_jump <= 0:
            raise ValueError("max_late, resync_seq_jump and resync_ts_jump must be positive")


@dataclass(slots=True)
class JitterStats:
    received: int = 0  # push() calls
    duplicates: int = 0
    late: int = 0  # arrived after (some of) their samples were due
    reordered: int = 0  # arrived after a higher sequence number
    lost: int = 0  # frames that contain concealment of missing samples
    resyncs: int = 0  # new SSRC, or sequence/timestamp discontinuity
    frames_out: int = 0
    inserted: int = 0  # samples synthesised to deepen the buffer
    dropped: int = 0  # samples removed to make it shallower
    target_delay: float = 0.0  # seconds
    delay: float = 0.0  # current playout delay beyond the fastest recent packet (s)
    depth: float = 0.0  # audio buffered ahead of the playout point (s)
    jitter: float = 0.0  # RFC 3550 interarrival jitter (s)
