"""Tones played as audio: in-band DTMF (ITU-T Q.23), for the transports that have no way to
send a digit as an event (Twilio Media Streams, AudioSocket, chan_websocket, the browser)."""

from __future__ import annotations

import math

import numpy as np

from callbridge.core.frames import PIPELINE_RATE

_KEYPAD = ("123A", "456B", "789C", "*0#D")  # rows 697..941 Hz, columns 1209..1633 Hz
_DTMF_PAIRS = {
    key: (low, high)
    for low, row in zip((697, 770, 852, 941), _KEYPAD, strict=True)
    for high, key in zip((1209, 1336, 1477, 1633), row, strict=True)
}


def dtmf_tone(digit: str, tone: float = 0.1, gap: float = 0.1, dbfs: float = -10.0) -> bytes:
    """In-band DTMF (ITU-T Q.23 frequency pair) as PCM16 at the pipeline rate, then silence:
    for a wire with no DTMF event towards the far end."""
    low, high = _DTMF_PAIRS[digit]
    t = np.arange(round(tone * PIPELINE_RATE)) / PIPELINE_RATE
    amp = 32767 * 10 ** (dbfs / 20) / 2  # each tone half: the pair peaks at `dbfs`
    x = amp * (np.sin(2 * math.pi * low * t) + np.sin(2 * math.pi * high * t))
    return x.astype("<i2").tobytes() + bytes(2 * round(gap * PIPELINE_RATE))
