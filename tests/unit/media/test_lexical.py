"""The lexical completeness check (media.lexical): transcripts that stop mid-phrase."""

from __future__ import annotations

import pytest

from callbridge.media.lexical import lexically_unfinished


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("hello", True),
        ("Hello.", True),
        ("um hi", True),
        ("I would like to", True),
        ("my name is john and", True),
        ("I want to talk to a person.", False),
        ("what time is it", False),
        ("yes", False),
        ("okay", False),
        ("Hold on,", True),
        ("hello, hang on a", True),
        ("just a second", True),
        ("hold on, I have another question", False),
        ("goodbye", False),
        ("", False),
    ],
)
def test_lexically_unfinished(text: str, unfinished: bool) -> None:
    assert lexically_unfinished(text) is unfinished
