"""Mark ledger: marks every `every` samples and at the end of each run; played moves only on an
echo; after a clear, the echoes of outstanding marks do not count as played."""

from __future__ import annotations

from callbridge.twilio_streams.marks import MarkLedger


def send(ledger: MarkLedger, utterance: int, frames: int, samples: int = 160) -> list[str]:
    names = []
    for _ in range(frames):
        for name in (ledger.before(utterance), ledger.sent(utterance, samples)):
            if name is not None:
                names.append(name)
    return names


def test_a_mark_every_100ms_of_audio() -> None:
    ledger = MarkLedger(every=800)
    names = send(ledger, 1, 12)
    assert names == ["cb1", "cb2"]  # after frames 5 and 10
    assert ledger.idle() == "cb3"  # the last 2 frames: the end of the run
    assert ledger.idle() is None
    assert ledger.outstanding == 3


def test_played_moves_only_on_echo() -> None:
    ledger = MarkLedger(every=800)
    send(ledger, 1, 12)
    ledger.idle()
    assert ledger.played(1) == 0
    assert ledger.sent_samples(1) == 12 * 160
    assert ledger.echoed("cb1")
    assert ledger.played(1) == 800
    assert ledger.echoed("cb3")  # an echo confirms the earlier marks too
    assert ledger.played(1) == 12 * 160
    assert ledger.outstanding == 0
    assert not ledger.echoed("cb2")  # already confirmed


def test_utterance_change_marks_the_end_of_the_previous() -> None:
    ledger = MarkLedger(every=800)
    assert send(ledger, 1, 3) == []
    assert ledger.before(2) == "cb1"  # utterance 1 ends here
    ledger.sent(2, 160)
    assert ledger.idle() == "cb2"
    ledger.echoed("cb1")
    assert (ledger.played(1), ledger.played(2)) == (480, 0)
    ledger.echoed("cb2")
    assert ledger.played(2) == 160


def test_clear_cancels_outstanding_marks() -> None:
    ledger = MarkLedger(every=800)
    send(ledger, 1, 12)
    ledger.echoed("cb1")
    assert ledger.clear() == 1  # cb2 was outstanding; the 2 unmarked frames are dropped too
    assert ledger.idle() is None
    # Twilio answers a clear by echoing every remaining mark: not played.
    assert not ledger.echoed("cb2")
    assert ledger.played(1) == 800
    # Marks after the clear count again.
    send(ledger, 2, 5)
    assert ledger.echoed("cb3")
    assert ledger.played(2) == 800
    assert (ledger.marks_sent, ledger.marks_echoed, ledger.marks_cancelled) == (3, 2, 1)


def test_unknown_names_are_ignored() -> None:
    ledger = MarkLedger()
    assert not ledger.echoed("someone-else")
    assert ledger.played(0) == 0
