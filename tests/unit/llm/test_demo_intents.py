"""The demo brain's intent matcher on what callers say and what recognisers hear: ordinary
phrasings, recogniser slips, and sentences that must not be taken for a request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.llm.intents import ACCEPT, RULES, Intent, classify, rank, similarity, words

It = Intent

PHRASINGS: list[tuple[str, Intent]] = [
    # the time
    ("what time is it", It.TIME),
    ("What time is it?", It.TIME),
    ("what's the time", It.TIME),
    ("do you have the time", It.TIME),
    ("time please", It.TIME),
    ("tell me the time", It.TIME),
    ("do you know what time it is", It.TIME),
    ("uh what's the time please", It.TIME),
    ("could you tell me the current time", It.TIME),
    ("what time is at", It.TIME),  # recogniser slips
    ("what's the tie", It.TIME),
    ("what tim is it", It.TIME),
    ("oh what time is it", It.TIME),
    ("what times is it", It.TIME),
    # the date and the day
    ("what's the date", It.DATE),
    ("what day is it", It.DATE),
    ("what's today's date", It.DATE),
    ("which day is today", It.DATE),
    ("what is the date today", It.DATE),
    ("tell me the date", It.DATE),
    ("what year is it", It.DATE),
    ("what dates it", It.DATE),
    ("what day is it today", It.DATE),
    # leaving a message
    ("can I leave a message", It.MESSAGE),
    ("I'd like to leave a message", It.MESSAGE),
    ("take a message", It.MESSAGE),
    ("could you take a message for me", It.MESSAGE),
    ("I want to leave a note for bob", It.MESSAGE),
    ("i like to leave a massage", It.MESSAGE),
    ("can i leave a massage", It.MESSAGE),
    ("i would like to leave a message for john", It.MESSAGE),
    ("i want to leave a mess age", It.MESSAGE),
    ("voicemail please", It.MESSAGE),
    # a person
    ("transfer me", It.TRANSFER),
    ("talk to a person", It.TRANSFER),
    ("can i talk to a person please", It.TRANSFER),
    ("speak to someone", It.TRANSFER),
    ("i need to speak to somebody", It.TRANSFER),
    ("operator", It.TRANSFER),
    ("a human please", It.TRANSFER),
    ("transfer me to somebody", It.TRANSFER),
    ("put me through to reception", It.TRANSFER),
    ("can i talk to a real person", It.TRANSFER),
    ("let me speak to a parson", It.TRANSFER),
    ("connect me to someone please", It.TRANSFER),
    ("i want to talk to some one", It.TRANSFER),
    # help
    ("what can you do", It.HELP),
    ("help", It.HELP),
    ("can you help me", It.HELP),
    ("what are my options", It.HELP),
    ("what can i ask", It.HELP),
    # repeat
    ("repeat that", It.REPEAT),
    ("say that again", It.REPEAT),
    ("pardon", It.REPEAT),
    ("sorry what", It.REPEAT),
    ("what", It.REPEAT),
    ("could you repeat that please", It.REPEAT),
    ("sorry i didn't catch that", It.REPEAT),
    ("come again", It.REPEAT),
    ("one more time please", It.REPEAT),
    # goodbye
    ("goodbye", It.GOODBYE),
    ("bye", It.GOODBYE),
    ("good bye", It.GOODBYE),
    ("ok bye bye", It.GOODBYE),
    ("that's all", It.GOODBYE),
    ("that's it thanks", It.GOODBYE),
    ("thats all thanks", It.GOODBYE),
    ("nothing else", It.GOODBYE),
    ("no that's all thank you", It.GOODBYE),
    ("thanks for your time goodbye", It.GOODBYE),
    ("okay by", It.GOODBYE),
    ("good buy", It.GOODBYE),
    ("have a nice day", It.GOODBYE),
    ("bye now", It.GOODBYE),
    # small talk and answers
    ("hello", It.GREETING),
    ("hi there", It.GREETING),
    ("good morning", It.GREETING),
    ("thank you", It.THANKS),
    ("thanks a lot", It.THANKS),
    ("yes please", It.YES),
    ("yeah", It.YES),
    ("no", It.NO),
    ("no thanks", It.NO),
    ("never mind", It.CANCEL),
    ("forget it", It.CANCEL),
    # the request wins over a greeting or an apology around it
    ("hello what time is it", It.TIME),
    ("sorry what time is it", It.TIME),
    ("hi can i leave a message", It.MESSAGE),
    ("is it possible to leave a message", It.MESSAGE),
]

NOT_A_REQUEST = [
    "i had a great time",
    "the weather is nice today",
    "stand by for the news",
    "i will buy a new car",
    "i would like to know more about the weather in the mountains next week",
    "hold on i have another question",
    "my tie is blue",
    "i like green apples",
    "someone called me yesterday about my order",
]


def test_the_table_is_large_enough() -> None:
    assert len(PHRASINGS) >= 60
    assert {intent for _, intent in PHRASINGS} == set(Intent) - {Intent.UNKNOWN}


@pytest.mark.parametrize(("heard", "intent"), PHRASINGS)
def test_phrasings_and_mishearings_find_their_intent(heard: str, intent: Intent) -> None:
    match = classify(heard)
    assert match.intent is intent, (heard, rank(words(heard)))
    assert match.score >= ACCEPT


@pytest.mark.parametrize("heard", NOT_A_REQUEST)
def test_ordinary_sentences_are_not_requests(heard: str) -> None:
    assert classify(heard).intent is Intent.UNKNOWN, rank(words(heard))


def test_a_misheard_word_alone_is_not_enough() -> None:
    # "tie" sounds like "time", but without a question around it it is just a tie.
    assert similarity("tie", "time") > 0
    assert classify("tie").intent is Intent.UNKNOWN
    assert classify("what's the tie").intent is Intent.TIME


def test_short_words_match_only_exactly() -> None:
    assert similarity("bye", "bye") == 1.0
    assert similarity("buy", "bye") == 0.0
    assert similarity("day", "dag") == 0.0
    assert similarity("massage", "message") >= 0.8


def test_ties_go_to_the_harmless_intent() -> None:
    # Both match; hanging up on a caller who asked for help would be the worse mistake.
    order = [rule.intent for rule in RULES]
    assert order.index(Intent.REPEAT) < order.index(Intent.GOODBYE)
    assert order.index(Intent.HELP) < order.index(Intent.GOODBYE)
    both = rank(words("time and date"))
    assert [m.intent for m in both] == [Intent.TIME, Intent.DATE]
    assert both[0].score == both[1].score


def test_words_normalise_what_recognisers_and_people_write() -> None:
    assert words("What's   the TIME?") == ("whats", "time")
    assert words("I\u2019d like to leave a message.") == ("id", "like", "leave", "message")
    assert words("uh um") == ()


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz '", max_size=60))
def test_any_text_classifies_deterministically(text: str) -> None:
    first = classify(text)
    assert classify(text) == first
    assert first.intent is Intent.UNKNOWN or first.score >= ACCEPT
