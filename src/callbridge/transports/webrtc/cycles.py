"""The reference cycles a closed aiortc peer connection keeps, cut.

A call's objects must go by reference counting when it ends (docs/architecture.md, "A
call's objects go by reference counting"): whatever sits in a cycle waits for a full garbage
collection, which stops every live call's media while it walks the heap. aiortc 1.16 (with
aioice 0.13 and pyOpenSSL 26) leaves three behind each peer connection once it is closed,
and with them the connection, its transports, sockets and tasks (~300 objects a call):
- each DTLS transport keeps the connection's state handler, a bound method of it;
- pyOpenSSL's verify helper and the callback it made hold each other;
- aioice's check list: its pairs hold their sockets' protocols, which hold the connection.
Only what is closed is touched. The last two are private attributes, looked up: an aiortc,
aioice or pyOpenSSL that changed them is left with its cycles, nothing worse.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection

__all__ = ["release_cycles"]


def release_cycles(pc: RTCPeerConnection) -> None:
    """Cut the cycles of `pc`, which must be closed."""
    dtls = {t.receiver.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        dtls.add(pc.sctp.transport)
    for transport in dtls:
        transport.remove_all_listeners()  # no events come after close
        ssl = getattr(transport, "_ssl", None)  # its OpenSSL.SSL.Connection
        context = ssl.get_context() if ssl is not None else None
        helper: Any = getattr(context, "_verify_helper", None)
        callback = getattr(helper, "callback", None)
        # The context keeps the callback itself, for as long as OpenSSL may call it.
        if callback is not None and getattr(context, "_verify_callback", None) is callback:
            helper.callback = None
        connection = getattr(transport.transport, "_connection", None)  # aioice's
        check_list = getattr(connection, "_check_list", None)
        if isinstance(check_list, list):
            check_list.clear()
