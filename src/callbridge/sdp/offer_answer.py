"""RFC 3264 offer/answer for one audio stream. Sans-IO.

The transport gets a MediaPlan (plain values, no SDP types); the UA gets SessionDescriptions to
put in INVITE / 200 OK bodies. NoCommonCodec and OfferError both map to 488 at the SIP layer.

Error contract, for any SessionDescription that `session.parse` accepted (i.e. anything a peer
can send): `create_answer` raises only OfferError or NoCommonCodec, `apply_answer` only
AnswerError or NoCommonCodec. All of them, and SdpParseError, are SdpError, so one
`except SdpError` covers parsing and negotiation. Work is linear in the description's size and
messages quote peer text only truncated.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass, field

from callbridge.sdp.session import (
    DIRECTIONS,
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    ptime_ms,
)

__all__ = [
    "PCMA",
    "PCMU",
    "AnswerError",
    "Codec",
    "LocalMedia",
    "MediaPlan",
    "NoCommonCodec",
    "OfferError",
    "apply_answer",
    "create_answer",
    "create_offer",
    "next_version",
]

_SUPPORTED_PROTO = "RTP/AVP"
_TELEPHONE_EVENT = "telephone-event"
_DTMF_EVENTS = range(16)  # RFC 4733 §3.2: 0-9 * # A-D, all we generate or report
_MAX_EVENT = 255  # RFC 4733 §2.3: the event field is 8 bits
_EVENT_RANGE_RE = re.compile(r"([0-9]{1,3})(?:-([0-9]{1,3}))?")
_QUOTE_MAX = 40  # peer text quoted in an error message


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    payload_type: int
    clock_rate: int = 8000


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)


def _new_session_id() -> int:
    # RFC 4566 §5.2 only asks for uniqueness; 31 bits keeps peers that parse it as int32/64 happy.
    return secrets.randbits(31) | 1


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """What we can do, and where we receive."""

    address: str
    port: int
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    dtmf_payload_type: int = 101
    ptime: int = 20
    session_id: int = field(default_factory=_new_session_id)
    session_version: int = 1
    username: str = "callbridge"


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """The negotiated result, for the RTP transport."""

    remote_address: str
    remote_port: int
    codec: Codec
    dtmf_payload_type: int | None
    ptime: int
    direction: str  # OUR direction: sendrecv | sendonly | recvonly | inactive
    remote_hold: bool  # the peer put us on hold (RFC 3264 §8.4)


class NoCommonCodec(SdpError):
    """No codec in common: the UA answers 488 Not Acceptable Here (RFC 3264 §6)."""


class OfferError(SdpError, ValueError):
    """The offer is unusable: no usable audio stream, or it lacks an address."""


class AnswerError(SdpError, ValueError):
    """The answer does not fit the offer (RFC 3264 §6: same m-line count, order)."""


# --- helpers -------------------------------------------------------------------------------


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _is_usable_audio(m: MediaDescription) -> bool:
    return m.media == "audio" and m.port != 0 and m.proto.upper() == _SUPPORTED_PROTO


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + "...")


def _first_common(m: MediaDescription, wanted: tuple[Codec, ...]) -> Codec | None:
    """The first format (in m='s order) that is a wanted codec, by rtpmap name
    (case-insensitive, RFC 4855 §3) and clock; formats that are no payload type match nothing."""
    for pt, (name, clock, channels) in m.rtpmaps().items():
        if channels != 1:
            continue
        for codec in wanted:
            if codec.name.lower() == name.lower() and codec.clock_rate == clock:
                return Codec(codec.name, pt, clock)
    return None


def _telephone_event_pt(m: MediaDescription, clock_rate: int) -> int | None:
    # RFC 4733 §2.1: the event clock must match the audio clock; Linphone offers several rates.
    for pt, (name, clock, _) in m.rtpmaps().items():
        if name.lower() == _TELEPHONE_EVENT and clock == clock_rate:
            return pt
    return None


def _event_ranges(events: list[int]) -> str:
    out: list[str] = []
    start = prev = events[0]
    for e in [*events[1:], -2]:
        if e == prev + 1:
            prev = e
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = e
    return ",".join(out)


def _answer_events(offered: str | None) -> str:
    """RFC 4733 §7.1.1: answer with the events we support among those offered.

    Each range is checked (numbers 0..255, low <= high) and clipped to our 0-15 before any
    expansion, so "0-30000000" costs what "0-15" does; malformed ranges are skipped.
    """
    default = _event_ranges(list(_DTMF_EVENTS))
    if not offered:
        return default  # RFC 4733 §7.1.1: no fmtp means 0-15
    events: set[int] = set()
    for part in offered.replace(" ", "").split(","):
        match = _EVENT_RANGE_RE.fullmatch(part)
        if match is None:
            continue
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low > high or high > _MAX_EVENT:
            continue
        events.update(range(max(low, _DTMF_EVENTS.start), min(high, _DTMF_EVENTS.stop - 1) + 1))
    common = sorted(events)
    return _event_ranges(common) if common else default


def _flip(direction: str) -> str:
    """RFC 3264 §6.1: the answer's direction mirrors the offer's."""
    match direction:
        case "sendonly":
            return "recvonly"
        case "recvonly":
            return "sendonly"
        case "inactive":
            return "inactive"
        case _:
            return "sendrecv"


def _direction(send: bool, recv: bool) -> str:
    if send and recv:
        return "sendrecv"
    if send:
        return "sendonly"
    return "recvonly" if recv else "inactive"


def _sends(direction: str) -> bool:
    return direction in ("sendrecv", "sendonly")


def _receives(direction: str) -> bool:
    return direction in ("sendrecv", "recvonly")


def _audio_media(
    port: int,
    *,
    codecs: tuple[Codec, ...],
    dtmf_pt: int | None,
    events: str,
    ptime: int,
    direction: str,
) -> MediaDescription:
    formats = [str(c.payload_type) for c in codecs]
    # Static types get an rtpmap too: RFC 3264 §5.1 recommends it and some peers insist.
    attrs: list[Attribute] = [
        ("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}") for c in codecs
    ]
    if dtmf_pt is not None:
        formats.append(str(dtmf_pt))
        clock = codecs[0].clock_rate if codecs else 8000
        attrs += [
            ("rtpmap", f"{dtmf_pt} {_TELEPHONE_EVENT}/{clock}"),
            ("fmtp", f"{dtmf_pt} {events}"),
        ]
    attrs += [("ptime", str(ptime)), (direction, None)]
    return MediaDescription(
        "audio", port, _SUPPORTED_PROTO, tuple(formats), attributes=tuple(attrs)
    )


def _local_session(
    local: LocalMedia, media: tuple[MediaDescription, ...], offer: SessionDescription | None
) -> SessionDescription:
    addrtype = _addrtype(local.address)
    return SessionDescription(
        origin=Origin(
            local.username,
            str(local.session_id),
            local.session_version,
            "IN",
            addrtype,
            local.address,
        ),
        session_name="-",
        connection=Connection(local.address, "IN", addrtype),
        # RFC 3264 §6: the answer's t= must equal the offer's.
        timing=offer.timing if offer is not None else Timing(),
        media=media,
    )


def _remote_address(
    sd: SessionDescription, m: MediaDescription, error: type[ValueError]
) -> Connection:
    conn = sd.media_connection(m)
    if conn is None:
        raise error("audio stream has no c= line at media or session level (RFC 4566 §5.7)")
    return conn


# --- public API ----------------------------------------------------------------------------


def create_offer(local: LocalMedia, direction: str = "sendrecv") -> SessionDescription:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    if not local.codecs:
        raise ValueError("LocalMedia.codecs is empty")
    media = _audio_media(
        local.port,
        codecs=local.codecs,
        dtmf_pt=local.dtmf_payload_type,
        events=_answer_events(None),
        ptime=local.ptime,
        direction=direction,
    )
    return _local_session(local, (media,), None)


def create_answer(
    offer: SessionDescription, local: LocalMedia
) -> tuple[SessionDescription, MediaPlan]:
    """Answer an offer (UAS side). Raises OfferError or NoCommonCodec; both mean 488."""
    candidates = [i for i, m in enumerate(offer.media) if _is_usable_audio(m)]
    if not candidates:
        offered = (
            ", ".join(f"{_quote(m.media)} {m.port} {_quote(m.proto)}" for m in offer.media)
            or "no m= lines"
        )
        raise OfferError(
            f"no usable audio stream (want audio over {_SUPPORTED_PROTO}; offered: {offered})"
        )
    chosen: tuple[int, Codec] | None = None
    for index in candidates:
        m = offer.media[index]
        # RFC 3264 §6.1: follow the offerer's preference order among the codecs we support.
        codec = _first_common(m, local.codecs)
        if codec is not None:
            chosen = (index, codec)
            break
    if chosen is None:
        offered_codecs = sorted(
            {
                f"{_quote(name)}/{clock}/{channels}"
                for i in candidates
                for name, clock, channels in offer.media[i].rtpmaps().values()
            }
        )
        shown = ", ".join(offered_codecs[:8]) + (", ..." if len(offered_codecs) > 8 else "")
        raise NoCommonCodec(
            f"none of {[c.name for c in local.codecs]} offered (offered: {shown or 'none'})"
        )
    index, codec = chosen
    m = offer.media[index]
    conn = _remote_address(offer, m, OfferError)
    dtmf_pt = _telephone_event_pt(m, codec.clock_rate)
    offer_direction = offer.media_direction(m)
    # RFC 3264 §8.4: c=0.0.0.0 is the RFC 2543 way of saying "do not send to me".
    null_address = conn.is_null
    answer_direction = _flip(offer_direction)
    if null_address:
        answer_direction = _direction(send=False, recv=_receives(answer_direction))
    ptime = m.ptime or offer_ptime(offer) or local.ptime

    answered: list[MediaDescription] = []
    for i, om in enumerate(offer.media):
        if i == index:
            events = _answer_events(m.fmtp(dtmf_pt)) if dtmf_pt is not None else ""
            answered.append(
                _audio_media(
                    local.port,
                    codecs=(codec,),
                    dtmf_pt=dtmf_pt,
                    events=events,
                    ptime=ptime,
                    direction=answer_direction,
                )
            )
        else:
            # RFC 3264 §6: decline by port 0 in the same position, keeping the offered formats.
            answered.append(MediaDescription(om.media, 0, om.proto, om.formats))
    answer = _local_session(local, tuple(answered), offer)
    plan = MediaPlan(
        remote_address=conn.address.split("/", 1)[0],
        remote_port=m.port,
        codec=codec,
        dtmf_payload_type=dtmf_pt,
        ptime=ptime,
        direction=answer_direction,
        remote_hold=null_address or offer_direction in ("sendonly", "inactive"),
    )
    return answer, plan


def offer_ptime(sd: SessionDescription) -> int | None:
    """A session-level a=ptime, which some stacks send although RFC 4566 makes it media-level."""
    return ptime_ms(sd.attribute("ptime"))


def apply_answer(offer: SessionDescription, answer: SessionDescription) -> MediaPlan:
    """Read the peer's answer to our offer (UAC side). NoCommonCodec if our audio was rejected."""
    if len(answer.media) != len(offer.media):
        raise AnswerError(
            f"answer has {len(answer.media)} m= lines, offer had {len(offer.media)} (RFC 3264 §6)"
        )
    index = next((i for i, m in enumerate(offer.media) if _is_usable_audio(m)), None)
    if index is None:
        raise AnswerError("our offer has no audio stream to apply the answer to")
    om, am = offer.media[index], answer.media[index]
    if am.port == 0:
        raise NoCommonCodec("the answer rejected the audio stream (port 0)")
    if am.media != om.media or am.proto.upper() != om.proto.upper():
        raise AnswerError(
            f"answer m= line {_quote(am.media)} {_quote(am.proto)} does not match the offer's"
            f" {om.media} {om.proto}"
        )
    ours = tuple(
        Codec(name, pt, clock)
        for pt, (name, clock, _) in om.rtpmaps().items()
        if name.lower() != _TELEPHONE_EVENT
    )
    # RFC 3264 §6.1: we send with the answer's payload type numbers, in the answer's order.
    codec = _first_common(am, ours)
    if codec is None:
        formats = " ".join(am.formats)
        raise NoCommonCodec(f"answer formats {_quote(formats)} share no codec with our offer")
    conn = _remote_address(answer, am, AnswerError)
    offered = offer.media_direction(om)
    answered = answer.media_direction(am)
    # telephone-event only if both sides listed it (RFC 4733 §7.1.1).
    dtmf_pt = _telephone_event_pt(am, codec.clock_rate)
    if _telephone_event_pt(om, codec.clock_rate) is None:
        dtmf_pt = None
    send = _sends(offered) and _receives(answered) and not conn.is_null
    recv = _receives(offered) and _sends(answered)
    return MediaPlan(
        remote_address=conn.address.split("/", 1)[0],
        remote_port=am.port,
        codec=codec,
        dtmf_payload_type=dtmf_pt,
        ptime=am.ptime or offer_ptime(answer) or om.ptime or 20,
        direction=_direction(send, recv),
        # The peer refuses media we offered to send: it holds us (or answers an old-style hold).
        remote_hold=conn.is_null or (_sends(offered) and not _receives(answered)),
    )


def next_version(sd: SessionDescription) -> SessionDescription:
    """The same description with o= version + 1, for a re-offer (RFC 3264 §8)."""
    return dataclasses.replace(
        sd, origin=dataclasses.replace(sd.origin, sess_version=sd.origin.sess_version + 1)
    )
