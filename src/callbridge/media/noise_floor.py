"""A line's noise floor: the quietest chunk level of the last couple of seconds.

Minimum statistics (R. Martin, "Noise power spectral density estimation based on optimal
smoothing and minimum statistics", IEEE Trans. Speech and Audio Processing, 2001), on whole
chunk levels rather than per frequency: speech has pauses between words at least every second
or two, so the minimum over such a window is the line's noise, whatever talks over it. Kept as
the minimum of each block of chunks, so an update is O(1) and a rise in the noise (a fan
switched on) is followed within a window.

Sans-IO: levels in, the floor out.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["NoiseFloor"]


class NoiseFloor:
    """The minimum of the last `blocks` x `block_chunks` chunk levels (dBFS), in blocks, and
    how much a steady noise's chunk levels spread above it."""

    def __init__(self, block_chunks: int = 8, blocks: int = 8) -> None:
        if block_chunks < 1 or blocks < 1:
            raise ValueError("block_chunks and blocks must be >= 1")
        self.block_chunks = block_chunks
        self._mins: deque[float] = deque(maxlen=blocks)
        self._ranges: deque[float] = deque(maxlen=blocks)
        self._low = math.inf
        self._high = -math.inf
        self._count = 0
        self._blocks_min = math.inf  # min(self._mins)
        self.floor: float | None = None  # None until one whole block was seen
        # The median of the blocks' ranges (max - min level): a steady noise's own spread
        # (white noise ~1 dB, low-passed or companded hiss several); speech widens only the
        # blocks it is in, and the median passes over them while most blocks are the line's.
        self.spread = 0.0

    def update(self, level: float) -> float | None:
        """Take one chunk's level; the floor, or None until one whole block was seen."""
        self._low = min(self._low, level)
        self._high = max(self._high, level)
        self._count += 1
        if self._count == self.block_chunks:
            self._mins.append(self._low)
            self._ranges.append(self._high - self._low)
            self.spread = sorted(self._ranges)[len(self._ranges) // 2]
            self._blocks_min = min(self._mins)  # once per block, not per chunk
            self._low, self._high, self._count = math.inf, -math.inf, 0
        if self._mins:
            low = self._low
            self.floor = low if low < self._blocks_min else self._blocks_min
        return self.floor

    def reset(self) -> None:
        self._mins.clear()
        self._ranges.clear()
        self._low, self._high, self._count = math.inf, -math.inf, 0
        self._blocks_min = math.inf
        self.floor, self.spread = None, 0.0
