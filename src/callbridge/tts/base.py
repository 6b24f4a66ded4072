"""Text-to-speech behind a small synchronous protocol (the agent runs it on a worker thread),
and the clause splitter that lets the first audio of a reply start before the reply is done.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final, Protocol

from callbridge.core.errors import AgentError

__all__ = ["Synthesizer", "TtsError", "split_clauses"]


class Synthesizer(Protocol):
    @property
    def sample_rate(self) -> int:
        """Always 8000: output is PCM16 at the pipeline rate."""
        ...

    def synthesize(self, text: str) -> Iterator[bytes]:
        """PCM16 8 kHz chunks, the first as soon as it is ready."""
        ...

    def close(self) -> None: ...


# A sentence end (. ! ? … possibly repeated, then closing quotes/brackets), ; or : followed by
# whitespace, or a line break. "3.5", "10:30" and "e.g.x" have no whitespace after the mark.
_BOUNDARY: Final = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[;:](?=\s)|\n")
_WORD_BEFORE_DOT: Final = re.compile(r"(\S+)\.$")
_ABBREVIATIONS: Final = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "gen", "gov", "sgt",
        "capt", "col", "lt", "rev", "hon", "vs", "etc", "approx", "dept", "est", "inc", "ltd",
        "co", "corp", "ave", "blvd", "rd", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
        "sep", "sept", "oct", "nov", "dec", "e.g", "i.e", "a.m", "p.m", "u.s", "u.k", "no",
    }
)  # fmt: skip
# Commas split only long sentences, and only where both sides stay long enough to be worth
# a synthesis call of their own (piper's time to first audio grows with clause length).
LONG_SENTENCE: Final = 60
MIN_COMMA_PIECE: Final = 25


# A clock time: "6:00", "6:05 AM", "18:30" (not a ratio or a verse: minutes 00-59 only).
_CLOCK: Final = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(\s*[AaPp]\.?\s?[Mm]\b\.?)?")


def speakable_times(text: str) -> str:
    """Clock times written the way they are said, for voices that read "6:00" digit by digit
    (piper and espeak-ng say "six zero zero", which a caller takes for a number): "6 AM"
    (on the hour with AM/PM), "6 o'clock", "6 oh 5", "6 30". The words stay digits: the voice's
    own number reading says them."""

    def say(m: re.Match[str]) -> str:
        hour, minute, half = int(m.group(1)), int(m.group(2)), m.group(3) or ""
        if minute == 0:
            words = f"{hour}" if half else f"{hour} o'clock" if hour <= 12 else f"{hour} hundred"
        elif minute < 10:
            words = f"{hour} oh {minute}"
        else:
            words = f"{hour} {minute}"
        return words + half

    return _CLOCK.sub(say, text)


def split_clauses(text: str) -> list[str]:
    """Split text into clauses to synthesise one at a time.

    Boundaries: sentence ends (. ! ? …), ; and :, line breaks, and commas of long sentences.
    Abbreviations ("Dr.", "e.g."), initials ("J. Smith"), list numbers ("1. Open it") and
    numbers ("3.5", "10:30", "1,000") stay whole. No text is lost: the clauses' words are the
    input's words, in order.
    """
    clauses: list[str] = []
    for sentence in _sentences(text):
        clauses.extend(_split_long(sentence))
    return clauses


def _sentences(text: str) -> Iterator[str]:
    start = 0
    for m in _BOUNDARY.finditer(text):
        if m.group() == "." and _keeps_going(text[start : m.end()]):
            continue
        piece = text[start : m.end()].strip()
        if piece:
            yield piece
        start = m.end()
    rest = text[start:].strip()
    if rest:
        yield rest


def _keeps_going(piece: str) -> bool:
    """Is the single '.' ending `piece` part of a word rather than a sentence end?"""
    m = _WORD_BEFORE_DOT.search(piece.rstrip())
    if m is None:
        return False
    word = m.group(1).lstrip("\"'“‘([")
    if word.lower() in _ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial
    return word.isdigit() and piece.strip() == f"{word}."  # a list number: "1. Open it"


def _split_long(sentence: str) -> list[str]:
    if len(sentence) < LONG_SENTENCE:
        return [sentence]
    pieces: list[str] = []
    start = 0
    for m in re.finditer(r",\s+", sentence):
        left = sentence[start : m.start() + 1].strip()
        right = sentence[m.end() :].strip()
        if len(left) >= MIN_COMMA_PIECE and len(right) >= MIN_COMMA_PIECE:
            pieces.append(left)
            start = m.end()
    pieces.append(sentence[start:].strip())
    return pieces


class TtsError(AgentError, RuntimeError):
    """A synthesizer failed (service unreachable, timed out, error reply); never holds a key."""
