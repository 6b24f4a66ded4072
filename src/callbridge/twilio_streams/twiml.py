"""The TwiML callbridge answers Twilio with: connect the call to a media stream, or dial SIP.

Built with ElementTree, so every attribute value and text is XML-escaped; attributes are
written in sorted order and the declaration is Twilio's, the same bytes the official
`twilio` package's VoiceResponse produces for the same document.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

__all__ = ["connect_stream", "dial_sip", "render"]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def _element(tag: str, attrs: Mapping[str, str | None], text: str | None = None) -> ET.Element:
    el = ET.Element(tag)
    for key in sorted(attrs):
        value = attrs[key]
        if value is not None:
            el.set(key, value)
    el.text = text
    return el


def render(*verbs: ET.Element) -> str:
    """`<Response>` holding `verbs`, as the text of a TwiML document."""
    root = ET.Element("Response")
    root.extend(verbs)
    return _DECLARATION + ET.tostring(root, encoding="unicode")


def connect_stream(
    url: str,
    parameters: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    *,
    name: str | None = None,
    status_callback: str | None = None,
) -> str:
    """`<Connect><Stream url=...>` with a `<Parameter>` per item: a bidirectional Media Stream
    whose `start` message carries the parameters as `customParameters`."""
    stream = _element("Stream", {"url": url, "name": name, "statusCallback": status_callback})
    items = parameters.items() if isinstance(parameters, Mapping) else parameters
    for key, value in items:
        stream.append(_element("Parameter", {"name": key, "value": value}))
    connect = ET.Element("Connect")
    connect.append(stream)
    return render(connect)


def dial_sip(sip_uri: str, *, caller_id: str | None = None, timeout: int | None = None) -> str:
    """`<Dial><Sip>sip:...</Sip></Dial>`: Twilio bridges the call to a SIP endpoint."""
    dial = _element(
        "Dial",
        {"callerId": caller_id, "timeout": None if timeout is None else str(timeout)},
    )
    dial.append(_element("Sip", {}, sip_uri))
    return render(dial)
