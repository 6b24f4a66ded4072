"""The agent's audio as a Twilio-dialect agent sends it to callbridge (the agent socket):
a bounded buffer cut into 20 ms frames and the marks the agent put into it. Sans-IO."""

from __future__ import annotations

import collections

from callbridge.core.frames import FRAME_BYTES, FRAME_SAMPLES, PIPELINE_RATE, AudioFrame

__all__ = ["AgentAudio"]


class AgentAudio:
    """The agent's audio as Twilio holds it, sans-IO: a buffer (of at most `max_samples`) cut
    into 20 ms frames for the leg, and the marks the agent put into it.

    Positions count samples of the current *utterance*: the audio since the last `clear`
    (each clear starts a new one, so the leg's `played(utterance)` restarts at 0). A mark at
    position p is due once the leg has played p samples of its utterance.
    """

    def __init__(self, max_samples: int = 60 * PIPELINE_RATE) -> None:
        if max_samples < FRAME_SAMPLES:
            raise ValueError("max_samples must hold a frame at least")
        self.max_samples = max_samples
        self.utterance = 1
        self._pcm = bytearray()
        self._received = 0  # samples of the current utterance buffered so far (with pads)
        self.fed = 0  # samples of the current utterance handed out as frames
        self.dropped = 0  # samples dropped over max_samples (all utterances)
        self._marks: collections.deque[tuple[str, int]] = collections.deque()

    def audio(self, pcm: bytes) -> int:
        """Buffer `pcm`; returns how many of the oldest samples (not yet fed) were dropped to
        stay within max_samples."""
        self._pcm += pcm
        self._received += len(pcm) // 2
        over = len(self._pcm) // 2 - self.max_samples
        if over <= 0:
            return 0
        del self._pcm[: 2 * over]
        # What is left moves `over` samples earlier in the utterance; a mark inside the
        # dropped audio is due once what was fed before it has played.
        self._received -= over
        self._marks = collections.deque(
            (name, pos if pos <= self.fed else max(self.fed, pos - over))
            for name, pos in self._marks
        )
        self.dropped += over
        return over

    def mark(self, name: str) -> None:
        # Not padded here: agents that mark every chunk (the OpenAI samples do) would get a
        # gap of silence at each. A partial frame before it is padded by the feeder once the
        # leg runs dry (`frame(pad=True)`).
        self._marks.append((name, self._received))

    def clear(self) -> tuple[int, list[str]]:
        """Drop the buffer; returns the samples dropped and every outstanding mark, in order
        (Twilio echoes them all on `clear`)."""
        dropped = len(self._pcm) // 2
        names = [name for name, _ in self._marks]
        self._pcm.clear()
        self._marks.clear()
        self._received = 0
        self.fed = 0
        self.utterance += 1
        return dropped, names

    def frame(self, pad: bool = False) -> AudioFrame | None:
        """The next 20 ms frame; a partial one (completed with silence) only when `pad`."""
        if len(self._pcm) < FRAME_BYTES:
            if not (pad and self._pcm):
                return None
            self._pad()
        chunk = bytes(self._pcm[:FRAME_BYTES])
        del self._pcm[:FRAME_BYTES]
        self.fed += FRAME_SAMPLES
        return AudioFrame(chunk)

    def _pad(self) -> None:
        rest = len(self._pcm) % FRAME_BYTES
        if rest:
            self._pcm += bytes(FRAME_BYTES - rest)
            self._received += (FRAME_BYTES - rest) // 2

    def due(self, played: int) -> list[str]:
        """Marks whose audio is played, given `played` samples of the current utterance."""
        out = []
        while self._marks and self._marks[0][1] <= played:
            out.append(self._marks.popleft()[0])
        return out

    @property
    def buffered_samples(self) -> int:
        return len(self._pcm) // 2

    @property
    def partial(self) -> bool:
        return 0 < len(self._pcm) < FRAME_BYTES

    @property
    def marks_pending(self) -> int:
        return len(self._marks)
