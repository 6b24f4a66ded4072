"""Streaming pocketsphinx recognizer on 8 kHz telephone audio (speech made with espeak-ng)."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterator

import pytest

from callbridge.audio.g711 import ulaw_decode, ulaw_encode
from callbridge.core.frames import FRAME_BYTES
from callbridge.stt.base import Recognizer, Transcript
from callbridge.stt.pocketsphinx import DecoderPool, PocketsphinxRecognizer
from callbridge.tts.espeak import EspeakSynthesizer

DIGITS = "one two three four five"


@pytest.fixture(scope="module")
def pool() -> DecoderPool:
    return DecoderPool()


@pytest.fixture(scope="module")
def digits_8k() -> bytes:
    return b"".join(EspeakSynthesizer().synthesize(DIGITS))


@pytest.fixture
def recognizer(pool: DecoderPool) -> Iterator[PocketsphinxRecognizer]:
    r = PocketsphinxRecognizer(pool=pool)
    yield r
    r.close()


def frames(pcm: bytes) -> Iterator[bytes]:
    for k in range(0, len(pcm), FRAME_BYTES):
        yield pcm[k : k + FRAME_BYTES]


def hits(expected: str, got: str) -> int:
    """Words of `expected` found in `got`, in order (longest common subsequence)."""
    m = difflib.SequenceMatcher(a=expected.split(), b=got.split(), autojunk=False)
    return sum(block.size for block in m.get_matching_blocks())


def recognise(r: Recognizer, pcm: bytes) -> tuple[list[Transcript], Transcript]:
    r.start()
    partials = [t for f in frames(pcm) for t in r.feed(f)]
    return partials, r.finish()


def test_is_a_recognizer(recognizer: PocketsphinxRecognizer) -> None:
    r: Recognizer = recognizer
    assert r is recognizer


def test_digits_are_recognised_with_partials_before_the_final(
    recognizer: PocketsphinxRecognizer, digits_8k: bytes
) -> None:
    partials, final = recognise(recognizer, digits_8k)
    assert final.final
    # First-pass pocketsphinx on narrow-band synthetic speech is not perfect ("one two" is
    # sometimes "went to"); a broken audio path (no upsampling, wrong rate) gets ~0 of 5.
    assert hits(DIGITS, final.text) >= 3
    assert partials
    assert all(not p.final and p.text for p in partials)
    # Reported only when the hypothesis changed, and they grow towards the final text.
    assert all(a.text != b.text for a, b in itertools.pairwise(partials))
    assert len(partials[0].text.split()) < len(final.text.split())
    assert hits(partials[-1].text, final.text) >= 3


def test_partials_are_rate_limited(recognizer: PocketsphinxRecognizer, digits_8k: bytes) -> None:
    recognizer.start()
    fed_at = []
    for n, f in enumerate(frames(digits_8k), start=1):
        if recognizer.feed(f):
            fed_at.append(n)
    recognizer.finish()
    # A hypothesis is read every 200 ms of audio = every 10th 20 ms frame (the resampler
    # withholds 2 ms, so the 10th frame's output falls just short: the 11th, then every 10th).
    assert fed_at
    assert all(n % 10 == 1 for n in fed_at)


def test_survives_g711_and_feed_without_start_starts_an_utterance(
    recognizer: PocketsphinxRecognizer, digits_8k: bytes
) -> None:
    for f in frames(ulaw_decode(ulaw_encode(digits_8k))):
        recognizer.feed(f)
    assert hits(DIGITS, recognizer.finish().text) >= 3


def test_silence_gives_an_empty_final(recognizer: PocketsphinxRecognizer) -> None:
    partials, final = recognise(recognizer, bytes(2 * 8000))
    assert partials == []
    assert final == Transcript("", final=True)


def test_finish_without_an_utterance_is_empty(recognizer: PocketsphinxRecognizer) -> None:
    assert recognizer.finish() == Transcript("", final=True)
    recognizer.start()
    recognizer.finish()
    assert recognizer.finish() == Transcript("", final=True)


def test_state_is_per_utterance(recognizer: PocketsphinxRecognizer, digits_8k: bytes) -> None:
    _, first = recognise(recognizer, digits_8k)
    _, quiet = recognise(recognizer, bytes(8000))
    assert hits(DIGITS, first.text) >= 3
    assert quiet.text == ""  # nothing carried over from the first utterance


def test_start_abandons_an_unfinished_utterance(
    recognizer: PocketsphinxRecognizer, digits_8k: bytes
) -> None:
    recognizer.start()
    recognizer.feed(digits_8k[: len(digits_8k) // 2])
    _, final = recognise(recognizer, bytes(8000))
    assert final.text == ""


def test_decoders_are_pooled_and_the_second_pass_is_off() -> None:
    pool = DecoderPool(max_idle=1)
    first = PocketsphinxRecognizer(pool=pool)
    assert (pool.loads, pool.idle) == (1, 0)
    decoder = first._decoder
    assert decoder.config["fwdflat"] is False
    assert decoder.config["bestpath"] is False
    assert decoder.config["maxhmmpf"] == 3000
    first.start()
    first.close()  # mid-utterance: ended, then returned
    first.close()
    assert pool.idle == 1
    second = PocketsphinxRecognizer(pool=pool)
    assert second._decoder is decoder
    assert pool.loads == 1
    third = PocketsphinxRecognizer(pool=pool)  # none idle: loads another
    assert pool.loads == 2
    second.close()
    third.close()
    assert pool.idle == 1  # max_idle
    with pytest.raises(RuntimeError):
        first.start()
