"""The Asterisk transports' settings and builders: defaults off, env names, the checks
between fields (FastAGI needs AudioSocket, ARI needs its user, routes must exist, an open
chan_websocket endpoint needs credentials), secrets kept out of repr, and what is built."""

from __future__ import annotations

import pytest

from callbridge.asterisk_setup import build_asterisk
from callbridge.config.schema import SECRET_SETTINGS, http_wanted
from callbridge.config.settings import load_settings
from callbridge.core.asyncio_clock import FakeClock
from callbridge.core.errors import ConfigError
from callbridge.core.ports import CallLeg, LegInfo
from callbridge.rtp.socket import PortAllocator


class Calls:
    def admit(self, info: LegInfo) -> None: ...

    def start(self, leg: CallLeg) -> None: ...


def test_all_off_by_default_and_nothing_built() -> None:
    s = load_settings(environ={})
    assert (s.audiosocket.enabled, s.fastagi.enabled, s.ari.enabled) == (False, False, False)
    assert (s.audiosocket.host, s.audiosocket.port, s.fastagi.port) == ("127.0.0.1", 9092, 4573)
    parts = build_asterisk(s, FakeClock(), Calls(), PortAllocator(10000, 10100))
    assert (parts.audiosocket, parts.fastagi, parts.ari, parts.chan_websocket) == (None,) * 4
    assert parts.web_routes() == []


def test_env_turns_them_on() -> None:
    s = load_settings(environ={
        "CALLBRIDGE_AUDIOSOCKET_ENABLED": "true", "CALLBRIDGE_AUDIOSOCKET_PORT": "9100",
        "CALLBRIDGE_AUDIOSOCKET_ALLOW_FROM": "10.0.0.0/8", "CALLBRIDGE_AUDIOSOCKET_ROUTE": "echo",
        "CALLBRIDGE_FASTAGI_ENABLED": "true",
        "CALLBRIDGE_ARI_ENABLED": "true", "CALLBRIDGE_ARI_USERNAME": "cb",
        "CALLBRIDGE_ARI_PASSWORD": "pw", "CALLBRIDGE_ARI_URL": "http://pbx:8088/",
        "CALLBRIDGE_CHAN_WEBSOCKET_ENABLED": "true",
    })  # fmt: skip
    parts = build_asterisk(s, FakeClock(), Calls(), PortAllocator(10000, 10100))
    assert parts.audiosocket is not None and parts.audiosocket.config.port == 9100
    assert parts.audiosocket.config.route == "echo"
    assert [str(n) for n in parts.audiosocket.config.allow_from] == ["10.0.0.0/8"]
    assert parts.fastagi is not None and parts.fastagi.audiosocket is parts.audiosocket
    assert parts.ari is not None and parts.ari.config.url == "http://pbx:8088"
    assert "pw" not in repr(parts.ari.config) and "pw" not in repr(s.ari)
    assert parts.chan_websocket is not None and len(parts.web_routes()) == 1
    assert http_wanted(s)
    assert {"ari.password", "chan_websocket.password"} <= SECRET_SETTINGS


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CALLBRIDGE_FASTAGI_ENABLED": "true"}, "fastagi.enabled"),
        ({"CALLBRIDGE_ARI_ENABLED": "true"}, "ari.username"),
        ({"CALLBRIDGE_AUDIOSOCKET_ROUTE": "nobody"}, "audiosocket.route"),
        ({"CALLBRIDGE_ARI_FORMAT": "opus"}, "ari.format"),
        ({"CALLBRIDGE_AUDIOSOCKET_ALLOW_FROM": "not-a-net"}, "audiosocket.allow_from"),
        ({"CALLBRIDGE_CHAN_WEBSOCKET_USERNAME": "a"}, "chan_websocket.password"),
        ({"CALLBRIDGE_CHAN_WEBSOCKET_ENABLED": "true", "CALLBRIDGE_HTTP_HOST": "0.0.0.0",
          "CALLBRIDGE_API_TOKEN": "t"}, "chan_websocket.username"),
    ],
)  # fmt: skip
def test_bad_combinations_name_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    assert field in str(err.value)
