"""`callbridge serve | call | doctor | settings`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from callbridge import __version__
from callbridge.config.settings import (
    SECRET_SETTINGS,
    Settings,
    all_fields,
    env_name,
    http_wanted,
    load_settings,
)
from callbridge.core.errors import ConfigError
from callbridge.observability.logging import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callbridge", description="Phone calls to AI voice agents.")
    p.add_argument("--version", action="version", version=f"callbridge {__version__}")
    p.add_argument("--config", "-c", help="TOML settings file (env CALLBRIDGE_CONFIG)")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the gateway (default)")
    call = sub.add_parser("call", help="place one outbound call with an agent attached")
    call.add_argument(
        "target", help="SIP URI, e.g. sip:alice@192.0.2.10:5060 (--via twilio: +15551234567)"
    )
    call.add_argument(
        "--via",
        choices=("sip", "twilio"),
        default="sip",
        help="place it from our SIP endpoint (default) or through Twilio's REST API",
    )
    call.add_argument("--agent", default="echo", help="agent to attach (default: echo)")
    call.add_argument(
        "--account",
        default=None,
        help="place it through this [accounts.NAME] provider trunk (answers its 401/407); "
        "the target may then be a bare number",
    )
    call.add_argument(
        "--duration", type=float, default=None, help="hang up after this many seconds"
    )
    sub.add_parser("settings", help="list every setting with its environment name and value")
    sub.add_parser("doctor", help="check settings and that the SIP port can be bound")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"callbridge: bad setting {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log.format, settings.log.level)
    command = args.command or "serve"
    if command == "settings":
        return _print_settings(settings)
    if command == "doctor":
        return asyncio.run(_doctor(settings))
    from callbridge import app

    try:
        if command == "call":
            return asyncio.run(
                app.place_call(
                    settings,
                    args.target,
                    args.agent,
                    args.duration,
                    via=args.via,
                    account=args.account,
                )
            )
        asyncio.run(app.serve(settings))
    except ConfigError as exc:
        print(f"callbridge: bad setting {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"callbridge: {exc} (is another process using the port? "
            "set CALLBRIDGE_SIP_PORT or CALLBRIDGE_HTTP_PORT)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _print_settings(settings: Settings) -> int:
    for dotted, _default in all_fields():
        value: object = settings
        for part in dotted.split("."):
            value = getattr(value, part)
        if dotted in SECRET_SETTINGS and value:
            value = "***"
        print(f"{env_name(dotted):32} {dotted:20} {value}")
    return 0


async def _doctor(settings: Settings) -> int:
    import socket

    ok = True
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((settings.sip.host, settings.sip.port))
        print(f"ok   SIP UDP {settings.sip.host}:{settings.sip.port} can be bound")
    except OSError as exc:
        ok = False
        print(f"FAIL SIP UDP {settings.sip.host}:{settings.sip.port}: {exc}")
    if http_wanted(settings):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((settings.http.host, settings.http.port))
            print(f"ok   HTTP TCP {settings.http.host}:{settings.http.port} can be bound")
        except OSError as exc:
            ok = False
            print(f"FAIL HTTP TCP {settings.http.host}:{settings.http.port}: {exc}")
        if settings.twilio.validate and not settings.twilio.auth_token:
            print("warn Twilio requests will be refused: no TWILIO_AUTH_TOKEN to check them")
    print(f"ok   settings valid; data dir {settings.data_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
