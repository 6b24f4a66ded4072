"""httpx responses, let go of whole.

httpx (0.28, 0.29) binds every response's stream to the response itself (encode/httpx#3733):
a reference cycle per request, which only a full garbage collection frees, and a full
collection stops every call's media while it walks the heap. A webhook per call event, a
transcription per utterance, a synthesis per clause, an ARI request per call step: each
would leave its response for that collection. Once a response is read (or its stream
closed), `let_go` cuts the cycle.
"""

from __future__ import annotations

import httpx

__all__ = ["let_go"]


def let_go(response: httpx.Response | None) -> None:
    """Cut the response's cycle; call once its body is read or its stream is closed."""
    if response is not None:
        response.stream = httpx.ByteStream(b"")
