"""Text-to-speech behind a small synchronous protocol (the agent runs it on a worker thread)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol


class Synthesizer(Protocol):
    @property
    def sample_rate(self) -> int:
        """Always 8000: output is PCM16 at the pipeline rate."""
        ...

    def synthesize(self, text: str) -> Iterator[bytes]:
        """PCM16 8 kHz chunks, the first as soon as it is ready."""
        ...

    def close(self) -> None: ...


_SPLIT = re.compile(r"(?<=[.!?;:])\s+(?=\S)")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|e\.g|i\.e)\.$", re.IGNORECASE)


def split_clauses(text: str) -> list[str]:
    """Split text into clauses to synthesise one at a time (sentence ends, ; and :)."""
    parts: list[str] = []
    for piece in _SPLIT.split(text.strip()):
        if parts and _ABBREV.search(parts[-1]):
            parts[-1] = f"{parts[-1]} {piece}"
        elif piece:
            parts.append(piece)
    return parts
