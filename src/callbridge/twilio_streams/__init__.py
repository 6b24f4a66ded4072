"""Twilio Media Streams, sans-IO: the WebSocket message codec (both roles), request
signatures, TwiML, and the app-side state machines (caller audio timeline, mark ledger).

Nothing here touches a socket or a clock: time enters as `now`, bytes and text go out.
"""
