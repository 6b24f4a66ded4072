"""The built-in rule-based brain, used when no LLM is configured: a small receptionist.

It has to work on what an offline recogniser hears: lowercase words without punctuation and
the odd wrong word, so the caller's intent comes from fuzzy keyword scoring (llm/intents.py),
never from exact phrases, and a turn it cannot place gets a short list of what it can do,
never the misheard words read back.

What it is in the middle of (waiting for a message, offering one instead of a transfer) is
read from the history, not kept here: an answer prepared for a pause the caller talks
through is dropped from the history, and so is the state it would have set.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from typing import TypeAlias

from callbridge.llm.base import BrainOutput, Message, TextDelta, ToolCall
from callbridge.llm.intents import Intent, Match, rank, words

HELP = (
    "You can ask me the time or the date, leave a message, ask to speak to a person, "
    "or say goodbye to hang up."
)
DEFAULT_GREETING = "Hello, this is the callbridge demo agent. " + HELP
NOT_UNDERSTOOD = "Sorry, I can't help with that. " + HELP
ANYTHING_ELSE = "Is there anything else I can help with?"
ASK_FOR_MESSAGE = "Sure, what message should I pass on?"
MESSAGE_TAKEN = "Thanks, I've taken your message: {message} " + ANYTHING_ELSE
NO_MESSAGE = "Okay, no message then. " + ANYTHING_ELSE
TRANSFER_NOW = "Of course, one moment."
NO_ONE_AVAILABLE = (
    "Sorry, there's no one available to take your call right now. "
    "Would you like to leave a message?"
)
WELCOME = "You're welcome. " + ANYTHING_ELSE
NOT_HEARD = "Sorry, I didn't catch that."
NOTHING_SAID_YET = "I haven't said anything yet. " + HELP
GOODBYE = "Thanks for calling. Goodbye!"

# The tools to run after a reply: (name, arguments).
_Tools: TypeAlias = list[tuple[str, dict[str, object]]]
_SHORT_ANSWER = 4  # words: longer turns while a message is awaited are the message itself


def _local_now() -> datetime:
    return datetime.now().astimezone()


class DemoBrain:
    """Tells the time and date, takes messages (the `take_message` tool), transfers to
    `transfer_to` (a SIP URI; "" = no one to transfer to), explains itself, repeats its last
    answer, and hangs up on goodbye. One instance per call."""

    def __init__(
        self,
        clock_now: Callable[[], datetime] | None = None,
        greeting: str = DEFAULT_GREETING,
        transfer_to: str = "",
    ) -> None:
        self._now = clock_now or _local_now
        self.greeting = greeting
        self.transfer_to = transfer_to.strip()
        self._tool_calls = 0
        # Our own recent answers: the history keeps only what the caller heard of a cut one,
        # and "say that again" wants all of it.
        self._answers: deque[str] = deque(maxlen=8)

    def __repr__(self) -> str:
        return f"DemoBrain(transfer_to={self.transfer_to!r})"

    async def respond(self, history: Sequence[Message]) -> AsyncGenerator[BrainOutput, None]:
        reply, tools = self._decide(history)
        if reply:
            self._answers.append(reply)
        # A message goes first: the agent records it even if the caller cuts the confirmation
        # short before the rest of this stream was read.
        for name, arguments in tools:
            if name == "take_message":
                yield self._tool("take_message", arguments)
        for piece in _word_groups(reply):
            yield TextDelta(piece)
        for name, arguments in tools:
            if name != "take_message":
                yield self._tool(name, arguments)

    def _tool(self, name: str, arguments: dict[str, object]) -> ToolCall:
        self._tool_calls += 1
        return ToolCall(f"demo_{name}_{self._tool_calls}", name, arguments)

    def _decide(self, history: Sequence[Message]) -> tuple[str, _Tools]:
        """The reply to the last turn, and the tools to run after it."""
        if not any(m.role == "user" for m in history):
            return self.greeting, []
        last = history[-1]
        if last.role != "user":
            return "", []  # a tool result or our own turn: nothing to add
        heard = " ".join(last.content.split())
        turn = words(heard)
        if not turn:
            return NOT_HEARD, []
        before = self._previous_answer(history[:-1])
        found = rank(turn)
        top = found[0].intent if found else Intent.UNKNOWN
        short = len(turn) <= _SHORT_ANSWER
        if before == ASK_FOR_MESSAGE:
            if short and top in (Intent.CANCEL, Intent.NO):
                return NO_MESSAGE, []
            if short and top in (Intent.REPEAT, Intent.MESSAGE):
                return ASK_FOR_MESSAGE, []  # "what?", or the request again: ask again
            if short and top is Intent.GOODBYE:
                return GOODBYE, [("hang_up", {})]
            message = _sentence(heard)
            return MESSAGE_TAKEN.format(message=message), [("take_message", {"text": heard})]
        if before == NO_ONE_AVAILABLE and top in (Intent.YES, Intent.NO):
            return (ASK_FOR_MESSAGE if top is Intent.YES else f"Alright. {ANYTHING_ELSE}"), []
        if before.endswith(ANYTHING_ELSE) and top is Intent.NO:
            return GOODBYE, [("hang_up", {})]  # "no" to "anything else?": the caller is done
        return self._answer(top, found, before)

    def _answer(self, top: Intent, found: list[Match], before: str) -> tuple[str, _Tools]:
        match top:
            case Intent.TIME | Intent.DATE:
                return self._clock_answer({m.intent for m in found}), []
            case Intent.MESSAGE:
                return ASK_FOR_MESSAGE, []
            case Intent.TRANSFER:
                if not self.transfer_to:
                    return NO_ONE_AVAILABLE, []
                return TRANSFER_NOW, [("transfer", {"target": self.transfer_to})]
            case Intent.HELP:
                return HELP, []
            case Intent.REPEAT:
                return before or NOTHING_SAID_YET, []
            case Intent.GOODBYE:
                return GOODBYE, [("hang_up", {})]
            case Intent.THANKS:
                return WELCOME, []
            case Intent.CANCEL:
                return f"Okay. {ANYTHING_ELSE}", []
            case Intent.YES | Intent.NO:
                return f"Okay. {HELP}", []
            case Intent.GREETING:
                return f"Hello! {HELP}", []
            case Intent.UNKNOWN:
                return NOT_UNDERSTOOD, []

    def _clock_answer(self, asked: set[Intent]) -> str:
        now = self._now()
        date = f"{now:%A}, {now:%B} {_ordinal(now.day)}, {now.year}"
        if Intent.TIME in asked and Intent.DATE in asked:
            return f"It's {_spoken_time(now)} on {date}."
        if Intent.DATE in asked:
            return f"Today is {date}."
        return f"It's {_spoken_time(now)}."

    def _previous_answer(self, history: Sequence[Message]) -> str:
        """Our last answer before the caller's turn, whole even if the caller cut it."""
        for m in reversed(history):
            if m.role == "user":
                return ""  # the caller spoke twice in a row: nothing to go back to
            if m.role != "assistant" or not (m.content.strip() or m.interrupted):
                continue  # a tool result, or a turn that was only a tool call
            if not m.interrupted:
                return m.content
            heard = m.content.strip()
            return next((a for a in reversed(self._answers) if a.startswith(heard)), heard)
        return ""


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
