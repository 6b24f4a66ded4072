"""Checks of single setting values: each returns the value (normalised) or raises ValueError
with what is allowed; settings.py names the field."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from callbridge.sip.access import parse_networks


def host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be an IP address or host name") from None
    return value


def port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535")
    return value


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def networks(value: str) -> str:
    parse_networks(value)  # its ValueError names the item
    return value


def addresses(value: str) -> str:
    """IP addresses, each with an optional :port (IPv4): "192.0.2.53, 127.0.0.1:5353"."""
    for item in (t.strip() for t in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        try:
            ipaddress.ip_address(host)
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address[:port] (e.g. 192.0.2.53 or 127.0.0.1:5353)"
            ) from None
    return value


def algorithms(value: str) -> str:
    names = [a.strip().upper() for a in value.split(",") if a.strip()]
    if not names or any(a not in ("SHA-256", "MD5") for a in names):
        raise ValueError('a comma-separated list of "SHA-256" and "MD5", e.g. "SHA-256,MD5"')
    return ",".join(names)


def auth_users(value: str) -> dict[str, str]:
    """ "alice:secret, bob:pw" -> {"alice": "secret", "bob": "pw"}; ValueError when malformed."""
    users: dict[str, str] = {}
    for item in (t.strip() for t in value.split(",")):
        if not item:
            continue
        name, sep, password = item.partition(":")
        if not sep or not name.strip() or not password:
            raise ValueError("each entry is user:password, separated by commas")
        users[name.strip()] = password
    return users


def choice(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return check


_HEX = frozenset("0123456789abcdefABCDEF")


def account_sid(value: str) -> str:
    if value and not (
        len(value) == 34 and value.startswith("AC") and all(c in _HEX for c in value[2:])
    ):
        raise ValueError("must be AC followed by 32 hex digits (Twilio console, Account Info)")
    return value


def phone(value: str) -> str:
    if value and not (value.startswith("+") and value[1:].isdigit() and len(value) > 4):
        raise ValueError("must be a number in E.164 form, e.g. +15551234567")
    return value


def url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")
