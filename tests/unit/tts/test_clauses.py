"""Clause splitting for streaming TTS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.tts.base import split_clauses


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Great! Really? Yes.", ["Great!", "Really?", "Yes."]),
        ("Wait; what: now", ["Wait;", "what:", "now"]),
        ("Well... maybe.", ["Well...", "maybe."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("(See above.) Next.", ["(See above.)", "Next."]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        ("  Spaced   out.   Text  ", ["Spaced   out.", "Text"]),
        # abbreviations, initials and numbers stay whole
        ("Dr. Smith will see you at 3.5 pm.", ["Dr. Smith will see you at 3.5 pm."]),
        (
            "Mr. and Mrs. Jones arrived at 5 p.m. today.",
            ["Mr. and Mrs. Jones arrived at 5 p.m. today."],
        ),
        ("Bring a pen, e.g. a blue one. Thanks.", ["Bring a pen, e.g. a blue one.", "Thanks."]),
        ("Call J. Smith now.", ["Call J. Smith now."]),
        ("It costs 3.50 dollars! Cheap.", ["It costs 3.50 dollars!", "Cheap."]),
        ("Meet at 10:30. Bye.", ["Meet at 10:30.", "Bye."]),
        ("We have 1,000 items.", ["We have 1,000 items."]),
        ("1. Open the door. 2. Close it.", ["1. Open the door.", "2. Close it."]),
        ("The total is 5. Anything else?", ["The total is 5.", "Anything else?"]),
        # commas split long sentences only, and only into pieces worth a synthesis call
        ("Yes, it is.", ["Yes, it is."]),
        (
            "If you would like to leave a message for the team, "
            "please say it after the tone and I will pass it on.",
            [
                "If you would like to leave a message for the team,",
                "please say it after the tone and I will pass it on.",
            ],
        ),
        (
            "Okay, so the appointment you asked about is on Tuesday at nine.",
            ["Okay, so the appointment you asked about is on Tuesday at nine."],
        ),
        ("", []),
        ("   ", []),
        ("no punctuation at all", ["no punctuation at all"]),
    ],
)
def test_split(text: str, clauses: list[str]) -> None:
    assert split_clauses(text) == clauses


def test_an_unfinished_tail_stays_one_clause() -> None:
    # The conversation keeps the last clause back until more text arrives; a sentence end
    # without the following space is not a boundary yet ("3." may become "3.5").
    assert split_clauses("It costs 3.") == ["It costs 3."]
    assert split_clauses("It costs 3.5 dollars. And") == ["It costs 3.5 dollars.", "And"]


@given(st.text(alphabet=st.sampled_from("ab .,;:!?\n3Dr"), max_size=80))
def test_no_text_is_lost_or_reordered(text: str) -> None:
    clauses = split_clauses(text)
    assert " ".join(clauses).split() == text.split()
    assert all(c and c == c.strip() for c in clauses)


def test_clock_times_are_written_as_said() -> None:
    from callbridge.tts.base import speakable_times

    assert speakable_times("It's 6:00 AM.") == "It's 6 AM."
    assert speakable_times("It's 6:00 am") == "It's 6 am"
    assert speakable_times("It is 6:00.") == "It is 6 o'clock."
    assert speakable_times("It's 6:05 PM.") == "It's 6 oh 5 PM."
    assert speakable_times("at 9:45, then 18:00") == "at 9 45, then 18 hundred"
    # not clock times: left alone; a verse reads like a time, and "3 16" is said the same way
    assert speakable_times("a 3:2 ratio, 10:75, 25:10") == "a 3:2 ratio, 10:75, 25:10"
    assert speakable_times("John 3:16") == "John 3 16"
