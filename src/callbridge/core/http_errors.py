"""Safe wording of HTTP failures from the clients of outside services (LLM, STT, TTS):
the URL without credentials or query, and the server's reason, shortened."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

__all__ = ["error_detail", "public_url"]


def public_url(url: str) -> str:
    """`url` without user info, query or fragment, for messages and logs."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{u.port}" if u.port is not None else ""
    return f"{u.scheme}://{host}{port}{u.path}"


def error_detail(body: bytes, limit: int = 160) -> str:
    """The server's reason from an error body (OpenAI style ``{"error": {"message": ...}}``,
    ``{"detail": ...}`` or plain text) as ": reason", or "" if there is none."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    detail: object = ""
    if isinstance(payload, dict):
        detail = payload.get("error", payload.get("detail", ""))
        if isinstance(detail, dict):
            detail = detail.get("message", "")
    elif body:
        detail = body.decode("utf-8", "replace")
    if not isinstance(detail, str):
        detail = json.dumps(detail)
    detail = " ".join(detail.split())[:limit]
    return f": {detail}" if detail else ""
