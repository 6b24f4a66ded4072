"""aiortc's audio receive buffer, made shallow.

aiortc 1.16 gives every audio receiver `JitterBuffer(capacity=16, prefetch=4)`
(aiortc/rtcrtpreceiver.py): a frame is handed to the decoder only once four later frames
have arrived, 80 ms of buffering, where its design needs one (a frame is known complete when
the next timestamp shows up). Our leg already absorbs arrival jitter: caller frames go to the
agent as they come and the agent's audio is paced by the media clock, so the extra 60 ms
was pure mouth-to-ear delay. Measured with bench/webrtc.py (browser -> echo -> browser):
p50 209 ms with aiortc's default, 140 ms with this.

aiortc has no setting for it, so the receiver's buffer is replaced right after the offer
made the receiver and before any packet arrived. Another aiortc whose receiver has no such
attribute is left as it is.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer

__all__ = ["PREFETCH_FRAMES", "make_shallow"]

PREFETCH_FRAMES = 1  # the least aiortc's buffer can do: a frame leaves when the next arrives
_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16's private (name-mangled) attribute


def make_shallow(receiver: Any) -> bool:
    """Swap `receiver`'s audio buffer for one that holds a single frame; True if it did."""
    current = getattr(receiver, _ATTR, None)
    if not isinstance(current, JitterBuffer) or current._is_video:
        return False
    setattr(receiver, _ATTR, JitterBuffer(capacity=current.capacity, prefetch=PREFETCH_FRAMES))
    return True
