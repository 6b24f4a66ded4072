"""SDP (RFC 4566) and the RFC 3264 offer/answer model. Sans-IO.

Every error raised for peer input (parsing or negotiation) is an SdpError.
"""

from callbridge.sdp.offer_answer import (
    PCMA,
    PCMU,
    AnswerError,
    Codec,
    LocalMedia,
    MediaPlan,
    NoCommonCodec,
    OfferError,
    apply_answer,
    create_answer,
    create_offer,
    next_version,
)
from callbridge.sdp.session import (
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SdpParseError,
    SessionDescription,
    Timing,
    parse,
)

__all__ = [
    "PCMA",
    "PCMU",
    "AnswerError",
    "Codec",
    "Connection",
    "LocalMedia",
    "MediaDescription",
    "MediaPlan",
    "NoCommonCodec",
    "OfferError",
    "Origin",
    "SdpError",
    "SdpParseError",
    "SessionDescription",
    "Timing",
    "apply_answer",
    "create_answer",
    "create_offer",
    "next_version",
    "parse",
]
