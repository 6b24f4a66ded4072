"""RTCP (RFC 3550 §6): the one import path for SR, RR, SDES, BYE and the statistics behind them.

The packets on the wire live in rtp.rtcp_packets, the statistics and report building in
rtp.rtcp_stats; this module re-exports both so callers need not know the split.
"""

from __future__ import annotations

from callbridge.rtp.rtcp_packets import (
    MAX_PACKETS,
    MAX_SDES_ITEMS,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    parse_compound,
    serialize_compound,
)
from callbridge.rtp.rtcp_stats import (
    ReceptionStats,
    SenderStats,
    build_bye,
    build_report,
    ntp_from_unix,
)

__all__ = [
    "MAX_PACKETS",
    "MAX_SDES_ITEMS",
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpPacket",
    "RtcpParseError",
    "SdesChunk",
    "SenderReport",
    "SenderStats",
    "SourceDescription",
    "UnknownRtcp",
    "build_bye",
    "build_report",
    "ntp_from_unix",
    "parse_compound",
    "serialize_compound",
]
