"""The sdp package's errors: one base for everything peer input can get wrong.

Parsing raises SdpParseError (here); negotiation raises OfferError, AnswerError and
NoCommonCodec (sdp.offer_answer), all under SdpError.
"""

from __future__ import annotations

from callbridge.core.errors import ProtocolError

__all__ = ["SdpError", "SdpParseError"]


class SdpError(ProtocolError):
    """Base of every error the sdp package raises for wire input: catch this one.

    Not itself a ValueError so that NoCommonCodec (488, RFC 3264 §6) stays distinct from
    malformed input; SdpParseError, OfferError and AnswerError are also ValueErrors.
    """


class SdpParseError(SdpError, ValueError):
    """The text is not a usable SDP session description; the message says which line and why."""
