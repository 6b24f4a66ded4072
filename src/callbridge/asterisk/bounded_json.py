"""Text and JSON from a peer, bounded before the standard parsers see it (shared helpers).

json.loads recurses per nesting level and int() of thousands of digits is slow and may raise
ValueError, so depth is counted first and integers are length-checked while decoding.
"""

from __future__ import annotations

import json
from typing import Any

from callbridge.asterisk.errors import AsteriskProtocolError


def text(data: str | bytes, limit: int, error: type[AsteriskProtocolError]) -> str:
    """`data` as str if it is at most `limit` bytes of UTF-8, else `error`."""
    if len(data) > limit:
        raise error(f"message of {len(data)} bytes exceeds {limit}")
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"message is not UTF-8: {exc.reason}") from None
    if len(data.encode("utf-8", "surrogatepass")) > limit:
        raise error(f"message exceeds {limit} bytes")
    return data


def too_deep(data: str, max_depth: int) -> bool:
    depth = 0
    in_string = escaped = False
    for ch in data:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def load_object(
    data: str, error: type[AsteriskProtocolError], *, max_depth: int, max_int_digits: int
) -> dict[str, Any]:
    """A JSON object, or `error` for anything else (bad JSON, too deep, huge numbers, NaN)."""
    if too_deep(data, max_depth):
        raise error(f"JSON nested deeper than {max_depth}")

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > max_int_digits:
            raise ValueError("number too long")
        return int(digits)

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(data, parse_int=bounded_int, parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        raise error(f"bad JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error("JSON message is not an object")
    return value
