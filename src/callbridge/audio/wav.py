"""WAV file I/O for PCM16 mono (fixtures, recordings, prompts). Blocking file I/O: edges only.

Also WAV in memory (sans-IO): `wav_bytes` / `parse_wav_bytes` for whole buffers and
`WavStream` for a WAV arriving piece by piece (an HTTP TTS reply).
"""

from __future__ import annotations

import os
import struct
import wave
from dataclasses import dataclass
from typing import Final

import numpy as np

__all__ = ["WavFormat", "WavStream", "parse_wav_bytes", "read_wav", "wav_bytes", "write_wav"]

StrPath = str | os.PathLike[str]


def read_wav(path: StrPath) -> tuple[bytes, int]:
    """Return (PCM16 little-endian mono samples, sample rate).

    Raises ValueError for anything else (stereo, 8/24/32-bit, float, compressed, not RIFF),
    naming what was found so a bad fixture is obvious.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            if channels != 1 or width != 2:
                raise ValueError(
                    f"{os.fspath(path)}: {channels} channel(s) of {8 * width}-bit samples; "
                    "expected 16-bit PCM mono"
                )
            return w.readframes(w.getnframes()), rate
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{os.fspath(path)}: not a PCM WAV file ({exc})") from exc


def write_wav(path: StrPath, pcm: bytes, rate: int) -> None:
    """Write PCM16 little-endian mono samples as a WAV file."""
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    if rate <= 0:
        raise ValueError("sample rate must be positive")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


# -- WAV in memory ----------------------------------------------------------------------------

_PCM: Final = 1
_IEEE_FLOAT: Final = 3
_EXTENSIBLE: Final = 0xFFFE
# A writer that streams does not know the data length when it sends the header: it writes 0
# or 0xFFFFFFFF (OpenAI's /audio/speech, soundfile), and then the data runs to the end.
_UNKNOWN_SIZES: Final = (0, 0xFFFFFFFF)
_MAX_FMT_SIZE: Final = 1024  # a real fmt chunk is 16-40 bytes; don't wait for megabytes of one


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A complete RIFF/WAVE file (PCM16 mono) holding `pcm`."""
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    if rate <= 0:
        raise ValueError("sample rate must be positive")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE",
        b"fmt ", 16, _PCM, 1, rate, 2 * rate, 2, 16,
        b"data", len(pcm),
    )  # fmt: skip
    return header + pcm


def parse_wav_bytes(data: bytes) -> tuple[bytes, int]:
    """(PCM16 mono samples, rate) from a whole RIFF/WAVE buffer.

    Multi-channel audio is downmixed (channel average). Streaming headers (data size 0 or
    0xFFFFFFFF, or larger than what follows) take the data to the end of the buffer. Raises
    ValueError naming the problem for anything but 16-bit integer PCM, or a broken file.
    """
    stream = WavStream()
    pcm = stream.feed(data)
    fmt = stream.finish()
    return pcm, fmt.rate


@dataclass(frozen=True, slots=True)
class WavFormat:
    rate: int
    channels: int


class WavStream:
    """Incremental WAV decoder: feed the bytes as they arrive, get PCM16 mono back as soon as
    whole sample frames of the data chunk are in. Chunks other than fmt and data are skipped.
    """

    def __init__(self) -> None:
        self.format: WavFormat | None = None
        self.done = False  # the data chunk's declared length has been read
        self._buf = bytearray()
        self._started = False  # RIFF header seen
        self._skip = 0  # bytes left of a chunk being skipped
        self._data_left: int | None = None  # None: before the data chunk; -1: to the end

    def feed(self, data: bytes) -> bytes:
        """Mono PCM16 of the complete sample frames now available (may be empty)."""
        if self.done:
            return b""
        self._buf += data
        if self._data_left is None and not self._read_header():
            return b""
        left, fmt = self._data_left, self.format
        assert left is not None and fmt is not None
        block = 2 * fmt.channels
        n = len(self._buf) if left == -1 else min(len(self._buf), left)
        n -= n % block
        frames = bytes(self._buf[:n])
        del self._buf[:n]
        if left != -1:
            self._data_left = left - n
            self.done = left - n < block
        return _downmix(frames, fmt.channels)

    def finish(self) -> WavFormat:
        """End of input: the format, or ValueError if the header never completed. A partial
        sample frame at the end is dropped."""
        if self.format is None or self._data_left is None:
            missing = "fmt" if self.format is None else "data"
            raise ValueError(f"WAV ended before its {missing} chunk")
        return self.format

    def _read_header(self) -> bool:
        """Consume header chunks up to the start of the data; False if more bytes are needed."""
        buf = self._buf
        if not self._started:
            if len(buf) < 12:
                return False
            # RF64 is RIFF with 64-bit sizes elsewhere and 0xFFFFFFFF in the data size.
            if bytes(buf[:4]) not in (b"RIFF", b"RF64") or buf[8:12] != b"WAVE":
                raise ValueError("not a RIFF/WAVE stream")
            del buf[:12]
            self._started = True
        while True:
            if self._skip:
                k = min(self._skip, len(buf))
                del buf[:k]
                self._skip -= k
                if self._skip:
                    return False
            if len(buf) < 8:
                return False
            chunk_id = bytes(buf[:4])
            (size,) = struct.unpack_from("<I", buf, 4)
            if chunk_id == b"data":
                if self.format is None:
                    raise ValueError("WAV data chunk before its fmt chunk")
                del buf[:8]
                self._data_left = -1 if size in _UNKNOWN_SIZES else size
                return True
            if chunk_id == b"fmt ":
                if not 16 <= size <= _MAX_FMT_SIZE:
                    raise ValueError(f"bad WAV fmt chunk size {size}")
                if len(buf) < 8 + size:
                    return False
                self.format = _parse_fmt(bytes(buf[8 : 8 + size]))
                del buf[:8]
                self._skip = size + (size & 1)
            else:
                del buf[:8]
                self._skip = size + (size & 1)  # chunks are word-aligned


def _parse_fmt(body: bytes) -> WavFormat:
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE and len(body) >= 26:
        (tag,) = struct.unpack_from("<H", body, 24)  # the sub-format GUID starts with the tag
    if tag == _IEEE_FLOAT:
        raise ValueError(f"{bits}-bit float samples; expected 16-bit integer PCM")
    if tag != _PCM:
        raise ValueError(f"WAV format tag {tag:#x} (compressed); expected 16-bit integer PCM")
    if bits != 16:
        raise ValueError(f"{bits}-bit samples; expected 16-bit integer PCM")
    if channels < 1 or rate < 1:
        raise ValueError(f"bad WAV format: {channels} channel(s) at {rate} Hz")
    return WavFormat(rate=rate, channels=channels)


def _downmix(frames: bytes, channels: int) -> bytes:
    if channels == 1 or not frames:
        return frames
    x = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.int32)
    mono: bytes = np.rint(x.mean(axis=1)).astype("<i2").tobytes()
    return mono
