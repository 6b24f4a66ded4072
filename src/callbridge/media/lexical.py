"""Lexical completeness: does a transcript stop mid-phrase? Pure text, no audio, no clocks.

The semantic end of turn (media.listening) asks a prosody model whether the caller is done;
a prepared transcript that ends on "and", or is only a greeting or a "hold on", vetoes its
"complete" whatever the prosody says.
"""

from __future__ import annotations

import re

__all__ = ["lexically_unfinished"]

# Words a finished utterance does not end on: conjunctions, articles, prepositions that need
# their object, possessives, fillers.
_OPEN_ENDINGS = frozenset(
    [
        "and",
        "or",
        "but",
        "so",
        "because",
        "if",
        "that",
        "the",
        "a",
        "an",
        "to",
        "of",
        "for",
        "with",
        "at",
        "from",
        "about",
        "into",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "um",
        "uh",
        "er",
        "erm",
        "hmm",
        "like",
    ]
)
# An utterance of only these is the preface to what the caller wants, not the request.
_PREFACES = frozenset(
    [
        "hello",
        "hi",
        "hey",
        "hiya",
        "hullo",
        "hallo",
        "um",
        "uh",
        "er",
        "erm",
        "hmm",
        "so",
        "well",
        "oh",
    ]
)
_WORD = re.compile(r"[a-z']+")


# Phrases that announce more is coming ("hold on, I have another question"): alone, or with
# prefaces, they are not a request to answer.
_HOLD_PHRASES = (
    "hold on", "hang on", "wait a moment", "wait a second", "wait", "one moment",
    "one second", "one sec", "just a moment", "just a second", "just a sec", "let me think",
    "let me see",
)  # fmt: skip


def lexically_unfinished(text: str) -> bool:
    """Does this transcript stop mid-phrase ("I would like to", "hello", "hold on")? Empty: no."""
    words = _WORD.findall(text.lower())
    if not words:
        return False
    if words[-1] in _OPEN_ENDINGS:
        return True
    rest = f" {' '.join(words)} "
    for phrase in _HOLD_PHRASES:
        rest = rest.replace(f" {phrase} ", " ")
    return all(w in _PREFACES for w in rest.split())
