"""What a caller wants, from what an offline recogniser heard: keyword sets with synonyms,
matched fuzzily word by word, scored, and accepted above a threshold.

Recognisers hear lowercase words without punctuation and the odd wrong word ("what's the tie",
"leave a massage", "good by"), so nothing here looks for an exact sentence. Each intent has
cues (a word or a short phrase, with a weight for how surely it means the intent) and context
words (a question word, "talk", "leave") that make a weaker or misheard cue count. Pure and
deterministic: the same words always give the same ranking.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache, lru_cache


class Intent(enum.Enum):
    TIME = "time"
    DATE = "date"
    MESSAGE = "message"
    TRANSFER = "transfer"
    HELP = "help"
    REPEAT = "repeat"
    GOODBYE = "goodbye"
    THANKS = "thanks"
    CANCEL = "cancel"
    YES = "yes"
    NO = "no"
    GREETING = "greeting"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Rule:
    intent: Intent
    cues: Mapping[str, float]  # a word or phrase -> how surely it alone means the intent
    context: frozenset[str] = frozenset()  # words that back a cue up (outside the cue)
    # A one-word cue in a long turn means little without context ("I had a great time").
    needs_context: bool = False
    whole: frozenset[str] = frozenset()  # whole turns that are this intent ("what", "no")
    endings: frozenset[str] = frozenset()  # last words of a short turn that are this intent


@dataclass(frozen=True, slots=True)
class Match:
    intent: Intent
    score: float
    cue: str  # what matched, for logs and tests


ACCEPT = 1.0  # an exact strong cue alone; a misheard or weak one needs context
CONTEXT_BONUS = 0.25
SHORT_TURN = 3  # words; "time please" is a question even without a question word
_WHOLE_SCORE = 1.5
# Fillers and articles the recogniser drops, adds or swaps ("leave the message" = "leave a
# message"): ignored in turns and in cues alike.
_FILLERS = frozenset({"a", "an", "the", "to", "uh", "um", "er", "erm", "ah", "oh", "hmm"})
_QUESTION = frozenset({"what", "whats", "which", "tell", "know", "got", "current", "please"})

RULES: tuple[Rule, ...] = (  # in this order when scores tie: the harmless and specific first
    Rule(
        Intent.REPEAT,
        {"repeat": 1.0, "again": 0.8, "pardon": 1.0, "say that again": 1.3, "come again": 1.2,
         "sorry what": 1.1, "what was that": 1.2, "what did you say": 1.2, "one more time": 1.3,
         "didnt catch": 1.2, "didnt hear": 1.2, "missed that": 1.1, "excuse me": 0.9},
        frozenset({"say", "that", "please", "could", "can", "you", "sorry"}),
        whole=frozenset({"what", "sorry", "huh", "eh", "pardon", "what what", "sorry what"}),
    ),
    Rule(
        Intent.CANCEL,
        {"never mind": 1.2, "nevermind": 1.2, "cancel": 1.0, "forget it": 1.2, "no message": 1.2,
         "dont worry": 1.0},
        whole=frozenset({"nothing", "no thanks never mind"}),
    ),
    Rule(
        Intent.MESSAGE,
        {"message": 1.0, "messages": 1.0, "voicemail": 1.0, "note": 0.6, "leave a message": 1.3,
         "take a message": 1.3, "leave a note": 1.2, "take a note": 1.2, "pass on": 0.8},
        frozenset({"leave", "take", "pass", "record", "give", "want", "like", "can", "could"}),
    ),
    Rule(
        Intent.TRANSFER,
        {"transfer": 1.0, "operator": 1.0, "receptionist": 1.0, "human": 1.0,
         "representative": 1.0, "person": 0.8, "someone": 0.8, "somebody": 0.8, "anyone": 0.7,
         "anybody": 0.7, "agent": 0.7, "staff": 0.7, "real person": 1.2, "put me through": 1.2,
         "connect me": 1.1, "talk to someone": 1.2, "speak to someone": 1.2,
         "talk to a person": 1.2, "speak to a person": 1.2},
        frozenset({"talk", "speak", "connect", "put", "through", "get", "want", "need", "can"}),
    ),
    Rule(
        Intent.TIME,
        {"time": 1.0, "clock": 0.9, "oclock": 1.0, "hour": 0.8, "have the time": 1.2,
         "time is it": 1.2},
        _QUESTION,
        needs_context=True,
    ),
    Rule(
        Intent.DATE,
        {"date": 1.0, "day": 1.0, "today": 0.8, "todays": 0.9, "weekday": 1.0, "year": 0.9,
         "month": 0.9, "what day": 1.2, "day is it": 1.2},
        _QUESTION,
        needs_context=True,
    ),
    Rule(
        Intent.HELP,
        {"help": 1.0, "options": 1.0, "option": 0.9, "menu": 0.9, "what can you do": 1.3,
         "what do you do": 1.1, "what can i ask": 1.2, "what can i say": 1.2,
         "how does this work": 1.2},
        frozenset({"what", "can", "you", "me", "please", "need"}),
    ),
    Rule(
        Intent.GOODBYE,
        {"goodbye": 1.0, "bye": 1.0, "byebye": 1.0, "farewell": 1.0, "good by": 1.0,
         "good buy": 1.0, "thats all": 1.2, "thats it": 1.0, "nothing else": 1.2, "hang up": 1.2,
         "im done": 1.0, "all done": 1.0, "thats everything": 1.2, "see you": 0.9,
         "have a nice day": 1.2, "have a good day": 1.2},
        frozenset({"thanks", "thank", "ok", "okay", "you", "now", "then", "calling", "for"}),
        endings=frozenset({"by", "buy"}),  # "bye" as heard; trusted only ending a short turn
    ),
    Rule(Intent.THANKS, {"thanks": 1.0, "thank you": 1.0, "cheers": 0.9}),
    Rule(
        Intent.YES,
        {"yes please": 1.0},
        whole=frozenset({"yes", "yeah", "yep", "yup", "sure", "ok", "okay", "please", "alright",
                         "yes please", "ok please", "okay please", "sure please", "of course"}),
    ),
    Rule(
        Intent.NO,
        {"no thanks": 1.0, "no thank you": 1.0},
        whole=frozenset({"no", "nope", "nah", "no no", "not really", "no thanks", "no thank you"}),
    ),
    Rule(
        Intent.GREETING,
        {"hello": 1.0, "hi": 1.0, "hey": 1.0, "howdy": 1.0, "hiya": 1.0, "good morning": 1.0,
         "good afternoon": 1.0, "good evening": 1.0},
    ),
)  # fmt: skip


def words(text: str) -> tuple[str, ...]:
    """Lowercase words, apostrophes dropped ("what's" -> "whats"), fillers left out."""
    raw = re.findall(r"[a-z0-9]+", text.lower().replace("'", "").replace("\u2019", ""))
    return tuple(w for w in raw if w not in _FILLERS)


@cache
def _cue_words(cue: str) -> tuple[str, ...]:
    return words(cue)


@lru_cache(maxsize=8192)  # bounded: callers' words are open-ended
def similarity(heard: str, cue: str) -> float:
    """How much `heard` sounds like `cue` (0 when not enough): exact for short words, which
    differ in one letter from too many others; a ratio for longer ones ("massage" ~ "message",
    "tie" ~ "time")."""
    if heard == cue:
        return 1.0
    if len(cue) < 4 or len(heard) < 2:
        return 0.0
    ratio = SequenceMatcher(None, heard, cue).ratio()
    return ratio if ratio >= (0.85 if len(cue) == 4 else 0.8) else 0.0


def _cue_score(turn: tuple[str, ...], cue: str) -> tuple[float, range]:
    """The best fit of `cue` in `turn` and the words it covers: word by word over a window of
    its length, or run together ("good bye" ~ "goodbye", "some one" ~ "someone")."""
    parts = _cue_words(cue)
    n = len(parts)
    best, span = 0.0, range(0)
    for i in range(len(turn) - n + 1):
        sims = [similarity(turn[i + j], parts[j]) for j in range(n)]
        if all(sims):
            score = sum(sims) / n
            if score > best:
                best, span = score, range(i, i + n)
    joined = "".join(parts)
    if len(joined) >= 6:
        for size in range(max(1, n - 1), n + 2):
            if size == n == 1:
                continue  # a one-word cue against one word: compared above
            for i in range(len(turn) - size + 1):
                ratio = SequenceMatcher(None, "".join(turn[i : i + size]), joined).ratio()
                if ratio >= 0.9 and ratio > best:
                    best, span = ratio, range(i, i + size)
    return best, span


def _score(rule: Rule, turn: tuple[str, ...]) -> Match | None:
    if " ".join(turn) in rule.whole:
        return Match(rule.intent, _WHOLE_SCORE, " ".join(turn))
    best, cue, span = 0.0, "", range(0)
    for text, weight in rule.cues.items():
        fit, where = _cue_score(turn, text)
        if fit * weight > best:
            best, cue, span = fit * weight, text, where
    if len(turn) <= SHORT_TURN and turn and turn[-1] in rule.endings and best < ACCEPT:
        best, cue, span = ACCEPT, turn[-1], range(len(turn) - 1, len(turn))
    if best == 0.0:
        return None
    rest = [w for i, w in enumerate(turn) if i not in span]
    backed = any(similarity(w, c) for w in rest for c in rule.context)
    if backed:
        best += CONTEXT_BONUS
    elif rule.needs_context and len(turn) > SHORT_TURN and len(_cue_words(cue)) == 1:
        best /= 2
    return Match(rule.intent, round(best, 3), cue)


def rank(turn: tuple[str, ...]) -> list[Match]:
    """The intents `turn` (from `words`) is accepted as, best first; ties go to the rule
    listed first (asking again is cheaper than hanging up on someone)."""
    order = {rule.intent: i for i, rule in enumerate(RULES)}
    found = [m for rule in RULES if (m := _score(rule, turn)) is not None and m.score >= ACCEPT]
    return sorted(found, key=lambda m: (-m.score, order[m.intent]))


def classify(text: str) -> Match:
    """The most likely intent of `text`, or UNKNOWN."""
    found = rank(words(text))
    return found[0] if found else Match(Intent.UNKNOWN, 0.0, "")
