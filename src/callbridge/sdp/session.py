"""SDP session descriptions (RFC 4566): the one import path for the model, parse and errors.

The dataclasses and their serialisation live in sdp.description, the bounded parser in
sdp.parser, bounded number reading in sdp.values and the errors in sdp.errors; this module
re-exports them so callers need not know the split. Sans-IO, no I/O, no clocks.
"""

from __future__ import annotations

from callbridge.sdp.description import (
    DIRECTIONS,
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)
from callbridge.sdp.errors import SdpError, SdpParseError
from callbridge.sdp.parser import (
    MAX_ATTRIBUTES,
    MAX_FORMATS,
    MAX_LINES,
    MAX_MEDIA,
    MAX_SDP_BYTES,
    parse,
)
from callbridge.sdp.values import STATIC_PAYLOAD_TYPES, parse_payload_type, ptime_ms

__all__ = [
    "DIRECTIONS",
    "MAX_ATTRIBUTES",
    "MAX_FORMATS",
    "MAX_LINES",
    "MAX_MEDIA",
    "MAX_SDP_BYTES",
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Connection",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SdpParseError",
    "SessionDescription",
    "Timing",
    "parse",
    "parse_payload_type",
    "ptime_ms",
]
