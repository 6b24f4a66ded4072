"""Pick the TTS: piper (natural voice) when its voice loads, else espeak-ng (always there)."""

from __future__ import annotations

import logging

from callbridge.core.log import event
from callbridge.tts.base import Synthesizer

log = logging.getLogger("callbridge.tts")


def default_synthesizer(prefer: str = "piper") -> Synthesizer:
    if prefer == "piper":
        try:
            from callbridge.tts.piper import PiperSynthesizer

            return PiperSynthesizer()
        except Exception as exc:  # a missing or broken voice must not stop the gateway
            event(log, "tts.fallback", logging.WARNING, wanted="piper", error=repr(exc))
    from callbridge.tts.espeak import EspeakSynthesizer

    return EspeakSynthesizer()
