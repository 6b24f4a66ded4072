"""What the caller has heard, from Twilio's mark echoes (the app side of `mark` / `clear`).

Twilio buffers the audio an app sends and plays it at the caller's pace; a `mark` sent after
some audio is echoed when that audio has played. So the ledger puts a mark after every
`every` samples of an utterance and at the end of each run of it (the utterance changes, the
queue runs dry, playout is held), remembers each mark's position in its utterance, and moves
`played(utterance)` forward only on an echo: that is what the caller heard, and what the
agent cuts its history to on barge-in.

After a `clear`, Twilio echoes every mark still outstanding although their audio was dropped
(docs: "sends back mark messages matching any remaining mark messages"), so `clear()` cancels
them: their echoes are ignored. Echoes come back in order, so an echo also confirms the marks
sent before it (in case one went missing).

Sans-IO: the transport sends the names this returns right after (or before) the audio.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MarkLedger"]

_MAX_CANCELLED = 4096  # names kept to recognise the echoes a clear provokes


class MarkLedger:
    def __init__(self, every: int = 800, prefix: str = "cb") -> None:
        if every <= 0:
            raise ValueError("every must be > 0 samples")
        self.every = every
        self.prefix = prefix
        self._seq = 0
        self._sent: dict[int, int] = {}  # samples of each utterance handed to Twilio
        self._played: dict[int, int] = {}  # ... confirmed played by an echo
        self._pending: OrderedDict[str, tuple[int, int]] = OrderedDict()  # name -> utt, position
        self._cancelled: set[str] = set()
        self._run: int | None = None  # utterance of the unmarked audio
        self._unmarked = 0  # samples sent since the last mark
        self.marks_sent = 0
        self.marks_echoed = 0
        self.marks_cancelled = 0

    # ---- sending ------------------------------------------------------------------------

    def before(self, utterance: int) -> str | None:
        """About to send audio of `utterance`: a mark to send first if another one's audio is
        still unmarked (its end is here)."""
        if self._unmarked and self._run != utterance:
            return self._mark()
        return None

    def sent(self, utterance: int, samples: int) -> str | None:
        """`samples` of `utterance` were handed to Twilio; a mark to send after them if due."""
        self._sent[utterance] = self._sent.get(utterance, 0) + samples
        self._run = utterance
        self._unmarked += samples
        return self._mark() if self._unmarked >= self.every else None

    def idle(self) -> str | None:
        """Nothing more to send for now (queue empty, held): mark the end of what was sent."""
        return self._mark() if self._unmarked else None

    def _mark(self) -> str:
        assert self._run is not None
        self._seq += 1
        name = f"{self.prefix}{self._seq}"
        self._pending[name] = (self._run, self._sent.get(self._run, 0))
        self._unmarked = 0
        self.marks_sent += 1
        return name

    # ---- receiving ----------------------------------------------------------------------

    def echoed(self, name: str) -> bool:
        """Twilio echoed `name`; True if that confirmed audio as played."""
        if name in self._cancelled:
            self._cancelled.discard(name)
            return False
        if name not in self._pending:
            return False
        while self._pending:
            first, (utterance, position) = self._pending.popitem(last=False)
            self._played[utterance] = max(self._played.get(utterance, 0), position)
            self.marks_echoed += 1
            if first == name:
                break
        return True

    def clear(self) -> int:
        """The app sent `clear`: outstanding marks will come back unplayed. Returns how many."""
        n = len(self._pending)
        if len(self._cancelled) + n > _MAX_CANCELLED:
            self._cancelled.clear()  # echoes that never came; forget them
        self._cancelled.update(self._pending)
        self._pending.clear()
        self._unmarked = 0
        self.marks_cancelled += n
        return n

    # ---- position -----------------------------------------------------------------------

    def played(self, utterance: int) -> int:
        """Samples of `utterance` the caller has heard (confirmed by an echo)."""
        return self._played.get(utterance, 0)

    def sent_samples(self, utterance: int) -> int:
        return self._sent.get(utterance, 0)

    @property
    def outstanding(self) -> int:
        """Marks sent and not yet echoed: audio possibly still in Twilio's buffer."""
        return len(self._pending)

    def forget(self, utterance: int) -> None:
        self._sent.pop(utterance, None)
        self._played.pop(utterance, None)
