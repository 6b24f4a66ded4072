"""The light fallback TTS: the espeak-ng program (Debian package espeak-ng).

Why a subprocess rather than libespeak-ng through ctypes: the library keeps global state (one
voice, one callback, not thread-safe), so concurrent calls would need a lock around every
clause anyway, and a hung or crashing synthesis would take the gateway with it. One short
process per clause costs ~10-30 ms here, is killed on a timeout, and needs no bindings.

Voice: "en-us+edward", a Klatt-synthesiser variant shipped with espeak-ng. On telephone-band
audio pocketsphinx understood it far better than the default en-us voice (word error rate
0.50 vs 1.07 on digit and short-question sentences through 8 kHz), a fair proxy for how
intelligible it is on the phone.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from typing import Final

from callbridge.audio.resample import resample
from callbridge.core.errors import AgentError
from callbridge.core.frames import PIPELINE_RATE
from callbridge.tts.base import speakable_times, split_clauses

__all__ = ["DEFAULT_VOICE", "EspeakError", "EspeakSynthesizer", "parse_wav"]

DEFAULT_VOICE: Final = "en-us+edward"


class EspeakError(AgentError, RuntimeError):
    """espeak-ng is missing, failed, timed out or produced something that is not PCM16 WAV."""


def parse_wav(data: bytes) -> tuple[bytes, int]:
    """(PCM16 mono samples, rate) from a RIFF/WAVE buffer.

    espeak-ng writes to a pipe before it knows the length, so its RIFF and data sizes are
    placeholders (0x7ffff0xx): the data chunk is taken to run to the end of the buffer.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EspeakError("espeak-ng output is not a RIFF/WAVE stream")
    pos = 12
    rate = 0
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise EspeakError("truncated WAV fmt chunk")
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if fmt != 1 or channels != 1 or bits != 16:
                raise EspeakError(
                    f"expected PCM16 mono, got format {fmt}, {channels} ch, {bits} bit"
                )
        elif chunk_id == b"data":
            if not rate:
                raise EspeakError("WAV data chunk before fmt chunk")
            pcm = data[body : min(len(data), body + size)]
            return pcm[: len(pcm) - len(pcm) % 2], rate
        pos = body + size + (size & 1)
    raise EspeakError("no data chunk in WAV output")


class EspeakSynthesizer:
    """Synthesizer (see tts.base) running espeak-ng once per clause."""

    sample_rate = PIPELINE_RATE

    def __init__(
        self,
        voice: str = DEFAULT_VOICE,
        speed: int = 160,
        timeout: float = 10.0,
        executable: str = "espeak-ng",
    ) -> None:
        path = shutil.which(executable)
        if path is None:
            raise EspeakError(f"{executable} is not installed (Debian package espeak-ng)")
        # --stdin: the text never becomes an argument (a clause may start with "-").
        self._argv = [path, "-v", voice, "-s", str(speed), "-b", "1", "--stdin", "--stdout"]
        self._timeout = timeout
        # Fail now, not on the first call. With --stdin an unknown voice silently falls back
        # to the default one, so check the voice with the text as an argument (-q: no audio).
        self._call([path, "-v", voice, "-q", "ok"], b"", stderr_is_error=True)
        next(self._run("ok"), None)

    def synthesize(self, text: str) -> Iterator[bytes]:
        """PCM16 8 kHz, one chunk per clause, each yielded as soon as espeak-ng is done."""
        for clause in split_clauses(speakable_times(text)):
            yield from self._run(clause)

    def close(self) -> None:
        pass

    def _run(self, clause: str) -> Iterator[bytes]:
        # espeak-ng reads "[[ ... ]]" as phoneme mnemonics; text from a brain is words only.
        clause = clause.replace("[[", "[ [").replace("]]", "] ]")
        data = self._call(self._argv, clause.encode())
        if not data:
            raise EspeakError("espeak-ng produced no output")
        pcm, rate = parse_wav(data)
        if pcm:
            yield resample(pcm, rate, PIPELINE_RATE)

    def _call(self, argv: list[str], text: bytes, stderr_is_error: bool = False) -> bytes:
        try:
            proc = subprocess.run(
                argv, input=text, capture_output=True, timeout=self._timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:  # run() has killed the process
            raise EspeakError(f"espeak-ng took longer than {self._timeout} s") from exc
        err = proc.stderr.decode(errors="replace").strip()
        # Some failures are only reported on stderr, with exit status 0.
        if proc.returncode != 0 or (stderr_is_error and err):
            raise EspeakError(f"espeak-ng failed (exit {proc.returncode}): {err}")
        return proc.stdout
