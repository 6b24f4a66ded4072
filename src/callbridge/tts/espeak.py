"""The light fallback TTS: the espeak-ng program (Debian package espeak-ng), one run per clause."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Iterator

from callbridge.audio.resample import resample
from callbridge.core.frames import PIPELINE_RATE


class EspeakSynthesizer:
    sample_rate = PIPELINE_RATE

    def __init__(self, voice: str = "en-us", speed: int = 165, timeout: float = 10.0) -> None:
        path = shutil.which("espeak-ng")
        if path is None:
            raise RuntimeError("espeak-ng is not installed (Debian package espeak-ng)")
        self._argv = [path, "-v", voice, "-s", str(speed), "--stdout"]
        self._timeout = timeout

    def synthesize(self, text: str) -> Iterator[bytes]:
        if not text.strip():
            return
        # "--" keeps a clause starting with "-" from being read as an option.
        out = subprocess.run(
            [*self._argv, "--", text], capture_output=True, timeout=self._timeout, check=True
        ).stdout
        with wave.open(io.BytesIO(out)) as w:
            rate = w.getframerate()
            pcm = w.readframes(w.getnframes())
        yield resample(pcm, rate, PIPELINE_RATE)

    def close(self) -> None:
        pass
