"""Every exception class callbridge defines is in one tree under CallbridgeError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import callbridge
from callbridge.core.errors import CallbridgeError

# Control flow inside one module, never raised past it.
PRIVATE = {"callbridge.agents.twilio_socket._Stopped"}


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(callbridge.__path__, "callbridge."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("callbridge."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [cls for name, cls in sorted(found.items()) if name not in PRIVATE]


def test_every_project_exception_is_a_callbridge_error() -> None:
    classes = _exception_classes()
    assert len(classes) > 25  # the walk found the project's errors
    outside = [
        f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, CallbridgeError)
    ]
    assert outside == []


def test_parse_errors_stay_value_errors() -> None:
    from callbridge.rtp.packet import RtpParseError
    from callbridge.sdp.errors import SdpParseError
    from callbridge.sip.headers import SipParseError

    for cls in (RtpParseError, SdpParseError, SipParseError):
        assert issubclass(cls, ValueError)
