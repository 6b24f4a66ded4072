"""The built-in rule-based brain, used when no LLM is configured.

It has to work on what an offline recogniser hears: lowercase words without punctuation and
the odd wrong word. So it looks for keywords (with a little fuzziness for longer words), never
for exact phrases. Keep one instance per call: it remembers that it asked for a message.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from difflib import SequenceMatcher

from callbridge.llm.base import BrainOutput, Message, TextDelta, ToolCall

DEFAULT_GREETING = (
    "Hello, this is the callbridge demo agent. You can ask me the time or the date, "
    "leave a message, or say goodbye to hang up."
)
HELP = "You can ask me the time or the date, leave a message, or say goodbye to hang up."
ASK_FOR_MESSAGE = "Sure, what message should I pass on?"
NOT_HEARD = "Sorry, I didn't catch that."
GOODBYE = "Thanks for calling. Goodbye!"

_GREETING_WORDS = frozenset(
    {"hello", "hi", "hey", "there", "howdy", "good", "morning", "afternoon", "evening"}
)
_QUESTION_WORDS = ("what", "whats", "which", "tell", "know", "got", "current")
_CANCEL_PHRASES = ("never mind", "nevermind", "no message", "cancel", "forget it", "nothing")
_FUZZY_MIN_LENGTH = 5  # shorter words differ in one letter from too many others
_FUZZY_RATIO = 0.8


def _local_now() -> datetime:
    return datetime.now().astimezone()


class DemoBrain:
    """Greets, tells the time and date, echoes, takes messages, and hangs up on goodbye."""

    def __init__(
        self,
        clock_now: Callable[[], datetime] | None = None,
        greeting: str = DEFAULT_GREETING,
    ) -> None:
        self._now = clock_now or _local_now
        self.greeting = greeting
        self._messages: list[str] = []
        self._awaiting_message = False
        self._hang_ups = 0

    def __repr__(self) -> str:
        return f"DemoBrain(messages={len(self._messages)})"

    @property
    def messages(self) -> tuple[str, ...]:
        """The messages callers left, oldest first."""
        return tuple(self._messages)

    async def respond(self, history: Sequence[Message]) -> AsyncGenerator[BrainOutput, None]:
        reply, hang_up = self._decide(history)
        for piece in _word_groups(reply):
            yield TextDelta(piece)
        if hang_up:
            self._hang_ups += 1
            yield ToolCall(f"demo_hang_up_{self._hang_ups}", "hang_up", {})

    def _decide(self, history: Sequence[Message]) -> tuple[str, bool]:
        """The reply to the last turn, and whether to hang up after it."""
        if not any(m.role == "user" for m in history):
            return self.greeting, False
        last = history[-1]
        if last.role != "user":
            return "", False  # a tool result or our own turn: nothing to add
        heard = " ".join(last.content.split())
        words = _words(heard)
        if not words:
            return NOT_HEARD, False
        if self._awaiting_message:
            self._awaiting_message = False
            if len(words) <= 3 and _has_phrase(words, *_CANCEL_PHRASES):
                return "Okay, no message then.", False
            self._messages.append(heard)
            return f"Got it, I'll pass on: {_sentence(heard)}", False
        if _is_goodbye(words):
            return GOODBYE, True
        if _has(words, "message", "messages"):
            self._awaiting_message = True
            return ASK_FOR_MESSAGE, False
        answer = self._clock_answer(words)
        if answer:
            return answer, False
        if _has(words, "help") or _has_phrase(words, "what can you do"):
            return HELP, False
        if set(words) <= _GREETING_WORDS:
            return f"Hello! {HELP}", False
        return f"You said: {_sentence(heard)}", False

    def _clock_answer(self, words: list[str]) -> str:
        # A question word, or a turn so short it can only be a question ("time please"),
        # keeps "I had a great time" or "nice day today" from being taken as questions.
        asking = _has(words, *_QUESTION_WORDS) or len(words) <= 3
        if not asking:
            return ""
        now = self._now()
        time_asked = _has(words, "time", "clock")
        date_asked = _has(words, "date", "today")
        if date_asked or _has(words, "day"):
            date = f"{now:%A}, {now:%B} {_ordinal(now.day)}, {now.year}"
            if time_asked:
                return f"It's {_spoken_time(now)} on {date}."
            return f"Today is {date}." if date_asked else f"It's {now:%A}."
        if time_asked:
            return f"It's {_spoken_time(now)}."
        if _has(words, "year"):
            return f"It's {now.year}."
        return ""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _matches(word: str, keyword: str) -> bool:
    if word == keyword:
        return True
    if len(keyword) < _FUZZY_MIN_LENGTH:
        return False
    return SequenceMatcher(None, word, keyword).ratio() >= _FUZZY_RATIO


def _has(words: list[str], *keywords: str) -> bool:
    return any(_matches(w, k) for w in words for k in keywords)


def _has_phrase(words: list[str], *phrases: str) -> bool:
    padded = f" {' '.join(words)} "
    return any(f" {phrase} " in padded for phrase in phrases)


def _is_goodbye(words: list[str]) -> bool:
    if _has(words, "goodbye", "bye", "byebye", "farewell"):
        return True
    if _has_phrase(words, "good by", "good buy", "hang up", "bye bye"):
        return True
    # Recognisers often hear "bye" as "by" or "buy"; trust that only at the end of a short turn.
    return len(words) <= 3 and words[-1] in {"by", "buy"}


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in {".", "!", "?"} else f"{text}."


def _spoken_time(now: datetime) -> str:
    hour = now.hour % 12 or 12
    return f"{hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}"


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _word_groups(text: str) -> list[str]:
    """Split a reply into a short first group (so synthesis starts at once) then groups of
    four words; the pieces concatenate back to ``text``."""
    words = text.split()
    pieces: list[str] = []
    start, size = 0, 2
    while start < len(words):
        end = min(start + size, len(words))
        piece = " ".join(words[start:end])
        pieces.append(piece if end == len(words) else f"{piece} ")
        start, size = end, 4
    return pieces
