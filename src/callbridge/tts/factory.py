"""Pick the TTS: piper (natural voice) when its voice loads, else espeak-ng (always there)."""

from __future__ import annotations

import logging

from callbridge.core.log import event
from callbridge.tts.base import Synthesizer

__all__ = ["default_synthesizer"]

log = logging.getLogger("callbridge.tts")


def default_synthesizer(prefer: str = "piper") -> Synthesizer:
    """The local synthesizer: `prefer`="piper" tries piper first, "espeak" goes straight to
    espeak-ng. Logs `tts.selected` with the engine chosen (and why, on fallback)."""
    if prefer not in ("piper", "espeak"):
        raise ValueError(f"unknown TTS engine {prefer!r}; expected 'piper' or 'espeak'")
    if prefer == "piper":
        try:
            from callbridge.tts.piper import PiperSynthesizer

            synth = PiperSynthesizer()
        except Exception as exc:  # a missing or broken voice must not stop the gateway
            event(
                log,
                "tts.selected",
                logging.WARNING,
                engine="espeak-ng",
                reason=f"piper voice failed to load: {exc!r}",
            )
        else:
            event(log, "tts.selected", engine="piper", voice="en_US-joe-medium")
            return synth
    from callbridge.tts.espeak import DEFAULT_VOICE, EspeakSynthesizer

    espeak = EspeakSynthesizer()
    if prefer == "espeak":
        event(log, "tts.selected", engine="espeak-ng", voice=DEFAULT_VOICE, reason="configured")
    return espeak
