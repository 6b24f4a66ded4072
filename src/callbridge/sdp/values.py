"""Numbers in SDP text read with bounds: payload types, a=ptime, a=rtpmap, the static table.

Every number is checked as at most a few ASCII digits before int() sees it (int() of 4,300
digits raises ValueError, and "²".isdigit() is true) and range-checked before use. Values read
lazily from attributes (rtpmap, ptime) give "no value" rather than an error when out of range.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_CHANNELS",
    "MAX_CLOCK_RATE",
    "MAX_PAYLOAD_TYPE",
    "MAX_PTIME_MS",
    "STATIC_PAYLOAD_TYPES",
    "as_payload_type",
    "digits",
    "parse_payload_type",
    "ptime_ms",
    "rtpmap_value",
]

MAX_PTIME_MS = 1000
MAX_CLOCK_RATE = 1_000_000
MAX_CHANNELS = 8
MAX_PAYLOAD_TYPE = 127
_PTIME_RE = re.compile(r"[0-9]{1,4}(?:\.[0-9]{0,6})?")

# RFC 3551 §6 table 4: static audio payload types, usable without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1), 18: ("G729", 8000, 1),
}  # fmt: skip


def digits(text: str, max_digits: int) -> int | None:
    """An ASCII decimal of 1..max_digits significant digits, else None; checked before int()
    sees it. Leading zeros are tolerated (and cost only their scan)."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= max_digits else None


def parse_payload_type(fmt: str) -> int | None:
    """A format as an RTP payload type 0..127 (RFC 3550 §5.1), or None for anything else.

    Non-numeric formats are legitimate for other protos (m=image ... udptl t38), so they are
    carried as opaque tokens that match no codec rather than rejected.
    """
    pt = digits(fmt, 3)
    return pt if pt is not None and pt <= MAX_PAYLOAD_TYPE else None


def ptime_ms(value: str | None) -> int | None:
    """An a=ptime value in whole ms, None when absent or outside 1..MAX_PTIME_MS.

    Some stacks send fractional ptime ("a=ptime:20.0"); RTP framing is whole ms. The pattern
    bounds the text before float() so "9"*400 (inf) or "nan" never reach round().
    """
    if value is None:
        return None
    text = value.strip()
    if _PTIME_RE.fullmatch(text) is None:
        return None
    ms = round(float(text))
    return ms if 1 <= ms <= MAX_PTIME_MS else None


def rtpmap_value(text: str) -> tuple[str, int, int] | None:
    """RFC 4566 §6 rtpmap: <encoding>/<clock>[/<channels>]; out-of-range numbers: no mapping."""
    parts = text.strip().split("/")
    if len(parts) < 2 or len(parts) > 3:
        return None
    clock = digits(parts[1].strip(), 7)
    channels = digits(parts[2].strip(), 1) if len(parts) > 2 and parts[2] else 1
    if clock is None or not 1 <= clock <= MAX_CLOCK_RATE:
        return None
    if channels is None or not 1 <= channels <= MAX_CHANNELS:
        return None
    return parts[0], clock, channels


def as_payload_type(payload_type: int | str) -> int | None:
    if isinstance(payload_type, int):
        return payload_type if 0 <= payload_type <= MAX_PAYLOAD_TYPE else None
    return parse_payload_type(payload_type)
