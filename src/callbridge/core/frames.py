"""The one internal audio format: PCM16 little-endian mono at the pipeline rate.

Telephony (G.711, Twilio, AudioSocket) is 8 kHz, so the pipeline runs at 8 kHz and
only wide-band edges (WebRTC, STT/TTS models) resample.
"""

from __future__ import annotations

from dataclasses import dataclass

PIPELINE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = PIPELINE_RATE * FRAME_MS // 1000  # 160
FRAME_BYTES = FRAME_SAMPLES * 2  # 320


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """One frame of PCM16 mono audio (normally 20 ms at PIPELINE_RATE).

    `concealed` marks frames synthesised by loss concealment rather than received.
    """

    pcm: bytes
    sample_rate: int = PIPELINE_RATE
    concealed: bool = False

    def __post_init__(self) -> None:
        if len(self.pcm) % 2:
            raise ValueError("PCM16 frame must have an even number of bytes")

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    @classmethod
    def silence(cls, samples: int = FRAME_SAMPLES, sample_rate: int = PIPELINE_RATE) -> AudioFrame:
        return cls(bytes(2 * samples), sample_rate)
