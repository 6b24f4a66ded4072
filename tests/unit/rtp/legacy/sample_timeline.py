# Frozen copy of the pre-issue-12 implementation: the reference the equivalence tests
# drive side by side with the optimised one. Do not optimise or edit.
# ruff: noqa
# mypy: ignore-errors
"""The jitter buffer's storage: received audio on a sample timeline with a play cursor.

Audio is kept as disjoint chunks keyed by extended RTP timestamp, in order. A typical
buffer holds a handful of packets, so a sorted list with bisect is the cheap structure;
reading slices `bytes` and never touches individual samples. Sans-IO.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Part", "SampleTimeline"]

_MAX_CHUNKS = 512  # bounds memory against a sender flooding future timestamps

Part = bytes | int  # audio, or a count of missing samples


@dataclass(slots=True)
class _Chunk:
    start: int  # extended timestamp of the first sample
    end: int
    pcm: bytes  # PCM16 little-endian
    marker: bool


class SampleTimeline:
    __slots__ = ("_chunks", "_starts", "pos")

    def __init__(self) -> None:
        self.pos = 0  # timestamp of the next sample to play
        self._chunks: list[_Chunk] = []
        self._starts: list[int] = []

    def reset(self, pos: int) -> None:
        """Drop everything buffered and put the cursor at `pos`."""
        self._chunks.clear()
        self._starts.clear()
        self.pos = pos

    def shift(self, delta: int) -> None:
        """Move the cursor and all buffered audio by `delta` timestamps."""
        for c in self._chunks:
            c.start += delta
            c.end += delta
        self._starts = [c.start for c in self._chunks]
        self.pos += delta

    @property
    def end(self) -> int | None:
        """Timestamp just after the last buffered sample (None when empty)."""
        return self._chunks[-1].end if self._chunks else None

    @property
    def depth(self) -> int:
        """Samples buffered ahead of the cursor, counting gaps between chunks."""
        return max(0, self._chunks[-1].end - self.pos) if self._chunks else 0

    def next_chunk(self) -> tuple[int, bool] | None:
        """(start, marker) of the first chunk not yet fully played."""
        for c in self._chunks:
            if c.end > self.pos:
                return c.start, c.marker
        return None

    def insert(self, start: int, pcm: bytes, marker: bool) -> None:
        """Add audio; samples already buffered win over a later overlapping arrival."""
        end = start + len(pcm) // 2
        chunks = self._chunks
        i = bisect.bisect_right(self._starts, start)
        if i > 0 and chunks[i - 1].end > start:
            prev_end = chunks[i - 1].end
            if prev_end >= end:
                return
            pcm = pcm[2 * (prev_end - start) :]
            start = prev_end
        if i < len(chunks) and chunks[i].start < end:
            end = chunks[i].start
            pcm = pcm[: 2 * (end - start)]
        if end <= start or len(chunks) >= _MAX_CHUNKS:
            return
        chunks.insert(i, _Chunk(start, end, pcm, marker))
        self._starts.insert(i, start)

    def peek(self, n: int) -> npt.NDArray[np.int16] | None:
        """The next n samples if all are buffered, without consuming them."""
        pos, end = self.pos, self.pos + n
        parts: list[bytes] = []
        for c in self._chunks:
            if c.end <= pos:
                continue
            if c.start > pos:
                return None
            stop = min(c.end, end)
            parts.append(c.pcm[2 * (pos - c.start) : 2 * (stop - c.start)])
            pos = stop
            if pos >= end:
                return np.frombuffer(b"".join(parts), dtype="<i2")
        return None

    def take(self, n: int) -> list[Part]:
        """Consume the next n samples: audio slices and gap lengths, in order."""
        chunks = self._chunks
        cur, end = self.pos, self.pos + n
        out: list[Part] = []
        done = 0
        for c in chunks:
            if cur >= end:
                break
            if c.end <= cur:
                done += 1
                continue
            if c.start > cur:
                gap_end = min(c.start, end)
                out.append(gap_end - cur)
                cur = gap_end
                if cur >= end:
                    break
            stop = min(c.end, end)
            out.append(c.pcm[2 * (cur - c.start) : 2 * (stop - c.start)])
            cur = stop
            if c.end <= end:
                done += 1
        if cur < end:
            out.append(end - cur)
        if done:
            del chunks[:done]
            del self._starts[:done]
        self.pos = end
        return out
