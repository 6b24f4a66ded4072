"""A provider account (`[accounts.NAME]`): where it registers, who it is, how to reach it.

The configuration side of registration and trunk calls: validated at load time so that a bad
registrar or user name is a ConfigError naming the setting, and the derived addresses (AOR,
next hop, preloaded Route) are computed in one place. The binding's life is registration.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callbridge.core.errors import ConfigError
from callbridge.sip.uri import SipUri, UriParseError


def split_hostport(text: str, what: str) -> tuple[str, int | None]:
    """ "host", "host:port", "[v6]:port" (an optional "sip:" prefix is dropped)."""
    value = text.strip()
    if value.lower().startswith("sip:"):
        value = value[4:]
    host, port = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ConfigError(what, f"bad host {text!r}")
        host, rest = value[: end + 1], value[end + 1 :]
        port = rest[1:] if rest.startswith(":") else rest
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigError(what, f"expected host or host:port, got {text!r}")
    return host, int(port) if port else None


@dataclass(frozen=True, slots=True)
class SipAccount:
    """A provider account (`[accounts.NAME]`): registration and credentials for trunk calls."""

    name: str
    registrar: str  # host[:port]
    username: str
    password: str = field(default="", repr=False)  # never logged
    domain: str = ""  # the AOR's domain; default: the registrar host
    auth_username: str = ""  # digest username; default: username
    expires: int = 3600
    register: bool = True
    outbound_proxy: str = ""  # host[:port]: next hop for REGISTER and INVITE instead of registrar

    def __post_init__(self) -> None:
        where = f"accounts.{self.name or '?'}"
        if not self.name:
            raise ConfigError("accounts", "an account needs a name")
        if not self.username:
            raise ConfigError(f"{where}.username", "must not be empty")
        split_hostport(self.registrar, f"{where}.registrar")
        if self.outbound_proxy:
            split_hostport(self.outbound_proxy, f"{where}.outbound_proxy")
        if self.expires <= 0:
            raise ConfigError(f"{where}.expires", "must be a positive number of seconds")
        try:
            SipUri.parse(str(self.aor))
        except UriParseError as exc:
            raise ConfigError(f"{where}.username", f"not usable in a SIP URI: {exc}") from None

    @property
    def domain_host(self) -> str:
        return self.domain or split_hostport(self.registrar, "registrar")[0]

    @property
    def auth_user(self) -> str:
        return self.auth_username or self.username

    @property
    def aor(self) -> str:
        """The address-of-record, sip:username@domain (RFC 3261 §10.2.1 To/From)."""
        return f"sip:{self.username}@{self.domain_host}"

    @property
    def next_hop(self) -> tuple[str, int]:
        host, port = self.hop
        return host, port or 5060

    @property
    def hop(self) -> tuple[str, int | None]:
        """The outbound proxy or registrar as written: no port means "ask DNS SRV" (RFC 3263)."""
        host, port = split_hostport(self.outbound_proxy or self.registrar, "registrar")
        return host.strip("[]"), port

    @property
    def route(self) -> str | None:
        """The preloaded Route to the outbound proxy (RFC 3261 §8.1.2), if there is one."""
        if not self.outbound_proxy:
            return None
        host, port = split_hostport(self.outbound_proxy, "outbound_proxy")
        return f"<sip:{host}{'' if port is None else f':{port}'};lr>"


__all__ = ["SipAccount", "split_hostport"]
