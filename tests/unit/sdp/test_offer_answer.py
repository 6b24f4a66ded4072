"""RFC 3264 offer/answer against golden offers from real peers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

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
from callbridge.sdp.session import SessionDescription, parse

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sdp"
LOCAL = LocalMedia(address="203.0.113.5", port=40000, session_id=4242, session_version=7)


def offer(name: str) -> SessionDescription:
    return parse((FIXTURES / name).read_bytes())


def answer_to(name: str, local: LocalMedia = LOCAL) -> tuple[SessionDescription, MediaPlan]:
    answer, plan = create_answer(offer(name), local)
    # Whatever we produce must survive our own parser unchanged (it goes on the wire).
    assert parse(bytes(answer)) == answer
    return answer, plan


# --- UAS: create_answer ----------------------------------------------------------------------


def test_sipp_offer_answers_pcma_and_telephone_event() -> None:
    answer, plan = answer_to("sipp_uac_pcap.sdp")
    assert plan == MediaPlan(
        remote_address="192.0.2.10",
        remote_port=6000,
        codec=PCMA,
        dtmf_payload_type=101,
        ptime=20,
        direction="sendrecv",
        remote_hold=False,
    )
    assert str(answer) == (
        "v=0\r\n"
        "o=callbridge 4242 7 IN IP4 203.0.113.5\r\n"
        "s=-\r\n"
        "c=IN IP4 203.0.113.5\r\n"
        "t=0 0\r\n"
        "m=audio 40000 RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-11\r\n"  # event 16 (flash) offered but not something we handle
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def test_offered_ptime_is_echoed_and_used() -> None:
    answer, plan = answer_to("sipp_pcma_ptime30.sdp")
    assert plan.ptime == 30
    assert answer.media[0].ptime == 30
    assert plan.codec == PCMA


def test_session_level_ptime_is_honoured() -> None:
    text = (FIXTURES / "sipp_uac_pcap.sdp").read_text().replace("t=0 0", "t=0 0\na=ptime:40")
    _, plan = create_answer(parse(text), LOCAL)
    assert plan.ptime == 40


def test_offerer_preference_order_wins() -> None:
    _, plan = answer_to("baresip.sdp")  # offers opus, G722, PCMU, PCMA
    assert plan.codec == PCMU
    swapped = (FIXTURES / "baresip.sdp").read_text().replace("96 9 0 8 101", "96 9 8 0 101")
    _, plan2 = create_answer(parse(swapped), LOCAL)
    assert plan2.codec == PCMA


def test_our_preference_does_not_override_offerer() -> None:
    local = dataclasses.replace(LOCAL, codecs=(PCMA, PCMU))
    _, plan = answer_to("baresip.sdp", local)
    assert plan.codec == PCMU


def test_answer_lists_only_the_chosen_codec_and_telephone_event() -> None:
    answer, plan = answer_to("baresip.sdp")
    m = answer.media[0]
    assert m.formats == ("0", "101")
    assert m.fmtp(101) == "0-15"
    assert plan.dtmf_payload_type == 101


def test_g729_only_offer_has_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec, match="G729"):
        create_answer(offer("g729_only.sdp"), LOCAL)


def test_srtp_only_offer_is_unusable() -> None:
    with pytest.raises(OfferError, match="RTP/SAVP"):
        create_answer(offer("srtp_only.sdp"), LOCAL)


def test_video_line_rejected_in_place() -> None:
    o = offer("audio_video.sdp")
    answer, plan = answer_to("audio_video.sdp")
    assert len(answer.media) == len(o.media) == 2
    video, audio = answer.media
    assert (video.media, video.port, video.proto, video.formats) == (
        "video",
        0,
        "RTP/AVP",
        ("96", "97"),
    )
    assert video.attributes == ()
    assert (audio.media, audio.port) == ("audio", 40000)
    assert plan.remote_port == 7078
    assert plan.codec == PCMU


def test_second_audio_and_already_rejected_lines_get_port_zero() -> None:
    base = (FIXTURES / "te96_pcmu.sdp").read_text()
    text = base + "m=audio 0 RTP/AVP 0\r\nm=audio 40002 RTP/AVP 8\r\nm=text 40004 RTP/AVP 98\r\n"
    answer, plan = create_answer(parse(text), LOCAL)
    assert [m.port for m in answer.media] == [40000, 0, 0, 0]
    assert [m.media for m in answer.media] == ["audio", "audio", "audio", "text"]
    assert plan.remote_port == 40000


def test_first_usable_audio_line_skips_srtp_and_uncommon_codecs() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 1000 RTP/SAVP 0\r\n"
        "m=audio 2000 RTP/AVP 18\r\n"
        "m=audio 3000 RTP/AVP 8\r\n"
    )
    answer, plan = create_answer(parse(text), LOCAL)
    assert [m.port for m in answer.media] == [0, 0, 40000]
    assert (plan.remote_port, plan.codec) == (3000, PCMA)


def test_telephone_event_on_pt96_keeps_offer_number() -> None:
    answer, plan = answer_to("te96_pcmu.sdp")
    assert plan.dtmf_payload_type == 96
    assert plan.codec == PCMU
    assert plan.remote_address == "2001:db8::80"
    m = answer.media[0]
    assert m.formats == ("0", "96")
    assert m.rtpmap(96) == ("telephone-event", 8000, 1)
    assert m.fmtp(96) == "0-15"


def test_answer_ipv6_local_address() -> None:
    local = dataclasses.replace(LOCAL, address="2001:db8::1")
    answer, _ = create_answer(offer("sipp_uac_pcap.sdp"), local)
    assert answer.origin.addrtype == "IP6"
    assert answer.connection is not None and answer.connection.addrtype == "IP6"


def test_linphone_picks_telephone_event_8000_among_several_rates() -> None:
    _, plan = answer_to("linphone.sdp")
    assert plan.codec == PCMU  # static PT 0 without rtpmap
    assert plan.dtmf_payload_type == 100  # not 101 (48 kHz) or 99 (16 kHz)


def test_no_telephone_event_when_not_offered() -> None:
    answer, plan = answer_to("hold_rfc2543.sdp")
    assert plan.dtmf_payload_type is None
    assert answer.media[0].formats == ("0",)


def test_dynamic_pt_matched_by_name_case_insensitively() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 3000 RTP/AVP 112 113\r\na=rtpmap:112 pcmu/8000\r\na=rtpmap:113 TELEPHONE-EVENT/8000\r\n"
    )
    _, plan = create_answer(parse(text), LOCAL)
    assert plan.codec == Codec("PCMU", 112)
    assert plan.dtmf_payload_type == 113


def test_wrong_clock_rate_or_stereo_does_not_match() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 3000 RTP/AVP 112 113\r\na=rtpmap:112 PCMU/16000\r\na=rtpmap:113 PCMA/8000/2\r\n"
    )
    with pytest.raises(NoCommonCodec):
        create_answer(parse(text), LOCAL)


@pytest.mark.parametrize(
    ("name", "answer_direction", "remote_hold"),
    [
        ("hold_sendonly.sdp", "recvonly", True),
        ("hold_inactive.sdp", "inactive", True),
        ("hold_rfc2543.sdp", "recvonly", True),
        ("baresip.sdp", "sendrecv", False),
    ],
)
def test_hold_offers(name: str, answer_direction: str, remote_hold: bool) -> None:
    answer, plan = answer_to(name)
    assert plan.remote_hold is remote_hold
    assert plan.direction == answer_direction
    assert answer.media_direction(answer.media[0]) == answer_direction


def test_recvonly_offer_is_answered_sendonly_and_is_not_hold() -> None:
    text = (FIXTURES / "hold_sendonly.sdp").read_text().replace("a=sendonly", "a=recvonly")
    answer, plan = create_answer(parse(text), LOCAL)
    assert plan.direction == "sendonly"
    assert not plan.remote_hold
    assert answer.media[0].own_direction == "sendonly"


def test_rfc2543_hold_with_sendonly_becomes_inactive() -> None:
    text = (
        (FIXTURES / "hold_rfc2543.sdp")
        .read_text()
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=recvonly")
    )
    _, plan = create_answer(parse(text), LOCAL)
    assert plan.direction == "inactive"
    assert plan.remote_hold


def test_answer_timing_copies_offer() -> None:
    text = (FIXTURES / "sipp_uac_pcap.sdp").read_text().replace("t=0 0", "t=3034423619 3042462419")
    answer, _ = create_answer(parse(text), LOCAL)
    assert (answer.timing.start, answer.timing.stop) == (3034423619, 3042462419)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.sdp")))
def test_answer_keeps_m_line_count(name: str) -> None:
    o = offer(name)
    try:
        answer, _ = create_answer(o, LOCAL)
    except (NoCommonCodec, OfferError):
        return
    assert len(answer.media) == len(o.media)
    assert [m.media for m in answer.media] == [m.media for m in o.media]


def test_offer_without_audio_is_an_offer_error() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=video 1 RTP/AVP 96\r\n"
    with pytest.raises(OfferError, match="no usable audio"):
        create_answer(parse(text), LOCAL)
    with pytest.raises(OfferError):
        create_answer(parse("v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nt=0 0\r\n"), LOCAL)


def test_offer_without_connection_is_an_offer_error() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"
    with pytest.raises(OfferError, match="c= line"):
        create_answer(parse(text), LOCAL)


def test_error_types() -> None:
    assert issubclass(OfferError, ValueError)
    assert not issubclass(NoCommonCodec, ValueError)


# --- UAC: create_offer / apply_answer -------------------------------------------------------


def test_create_offer_golden() -> None:
    o = create_offer(LOCAL)
    assert str(o) == (
        "v=0\r\n"
        "o=callbridge 4242 7 IN IP4 203.0.113.5\r\n"
        "s=-\r\n"
        "c=IN IP4 203.0.113.5\r\n"
        "t=0 0\r\n"
        "m=audio 40000 RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )
    assert parse(bytes(o)) == o


def test_create_offer_hold_direction_and_bad_direction() -> None:
    assert create_offer(LOCAL, "sendonly").media[0].own_direction == "sendonly"
    with pytest.raises(ValueError, match="direction"):
        create_offer(LOCAL, "hold")


def test_default_session_ids_are_random_and_positive() -> None:
    ids = {LocalMedia(address="192.0.2.1", port=1).session_id for _ in range(5)}
    assert len(ids) > 1
    assert all(0 < i < 2**31 for i in ids)


def test_our_offer_answered_by_our_own_answerer() -> None:
    """UAC and UAS halves agree when they talk to each other."""
    uac = dataclasses.replace(LOCAL, codecs=(PCMA, PCMU), dtmf_payload_type=96)
    uas = LocalMedia(address="198.51.100.7", port=50000, session_id=1)
    o = create_offer(uac)
    answer, uas_plan = create_answer(parse(bytes(o)), uas)
    uac_plan = apply_answer(o, parse(bytes(answer)))
    assert uas_plan.codec == uac_plan.codec == PCMA
    assert uas_plan.dtmf_payload_type == uac_plan.dtmf_payload_type == 96
    assert (uac_plan.remote_address, uac_plan.remote_port) == ("198.51.100.7", 50000)
    assert (uas_plan.remote_address, uas_plan.remote_port) == ("203.0.113.5", 40000)
    assert uac_plan.direction == uas_plan.direction == "sendrecv"
    assert not uac_plan.remote_hold and not uas_plan.remote_hold


def test_our_hold_reoffer_answered() -> None:
    o = create_offer(LOCAL, "sendonly")
    answer, uas_plan = create_answer(o, LocalMedia(address="198.51.100.7", port=50000))
    assert uas_plan.remote_hold and uas_plan.direction == "recvonly"
    plan = apply_answer(o, answer)
    assert plan.direction == "sendonly"
    assert not plan.remote_hold  # we are the ones holding


def test_apply_answer_uses_answer_payload_type_and_ptime() -> None:
    o = create_offer(LOCAL)
    ans = parse(
        "v=0\r\no=peer 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n"
        "m=audio 7000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\n"
    )
    plan = apply_answer(o, ans)
    assert plan == MediaPlan("198.51.100.9", 7000, PCMA, 101, 30, "sendrecv", False)


def test_apply_answer_without_telephone_event() -> None:
    o = create_offer(LOCAL)
    ans = parse(
        "v=0\r\no=p 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
    )
    plan = apply_answer(o, ans)
    assert plan.dtmf_payload_type is None
    assert plan.ptime == 20  # from our offer


@pytest.mark.parametrize(
    ("attr", "address", "direction", "hold"),
    [
        ("a=recvonly", "198.51.100.9", "sendonly", False),
        ("a=sendonly", "198.51.100.9", "recvonly", True),
        ("a=inactive", "198.51.100.9", "inactive", True),
        ("a=sendrecv", "0.0.0.0", "recvonly", True),
    ],
)
def test_apply_answer_directions(attr: str, address: str, direction: str, hold: bool) -> None:
    o = create_offer(LOCAL)
    ans = parse(
        f"v=0\r\no=p 1 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\nt=0 0\r\n"
        f"m=audio 7000 RTP/AVP 0\r\n{attr}\r\n"
    )
    plan = apply_answer(o, ans)
    assert (plan.direction, plan.remote_hold) == (direction, hold)


def test_apply_answer_rejected_stream_is_no_common_codec() -> None:
    o = create_offer(LOCAL)
    ans = parse(
        "v=0\r\no=p 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n"
    )
    with pytest.raises(NoCommonCodec, match="port 0"):
        apply_answer(o, ans)


def test_apply_answer_with_foreign_codec_is_no_common_codec() -> None:
    o = create_offer(LOCAL)
    ans = parse(
        "v=0\r\no=p 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    with pytest.raises(NoCommonCodec):
        apply_answer(o, ans)


def test_apply_answer_m_line_count_mismatch() -> None:
    o = create_offer(LOCAL)
    ans = parse("v=0\r\no=p 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n")
    with pytest.raises(AnswerError, match="m= lines"):
        apply_answer(o, ans)


def test_apply_answer_without_address() -> None:
    o = create_offer(LOCAL)
    ans = parse("v=0\r\no=p 1 1 IN IP4 198.51.100.9\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n")
    with pytest.raises(AnswerError, match="c= line"):
        apply_answer(o, ans)


def test_next_version_increments_only_the_version() -> None:
    o = create_offer(LOCAL)
    o2 = next_version(o)
    assert o2.origin.sess_version == o.origin.sess_version + 1
    assert o2.origin.sess_id == o.origin.sess_id
    assert o2.media == o.media
    assert next_version(o2).origin.sess_version == 9
    reanswer = next_version(create_answer(offer("baresip.sdp"), LOCAL)[0])
    assert "o=callbridge 4242 8 " in str(reanswer)
