"""`callbridge serve | call | doctor | settings`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from callbridge import __version__
from callbridge.agents.local_audio import AudioDeviceError
from callbridge.config.settings import (
    SECRET_SETTINGS,
    Settings,
    all_fields,
    env_name,
    load_settings,
)
from callbridge.core.errors import ConfigError
from callbridge.observability.logging import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callbridge", description="Phone calls to AI voice agents.")
    p.add_argument("--version", action="version", version=f"callbridge {__version__}")
    p.add_argument("--config", "-c", help="TOML settings file (env CALLBRIDGE_CONFIG)")
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the gateway (default)")
    serve.add_argument(
        "--workers",
        default=None,
        metavar="N",
        help='gateway processes behind a built-in SIP dispatcher on the SIP port; "auto" or 0 '
        "= one per core (default: the workers setting, else 1)",
    )
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--advertise", default=None, help=argparse.SUPPRESS)
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
    call.add_argument(
        "--ring-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up (no_answer) if not answered in this long (default 60)",
    )
    call.add_argument(
        "--listen",
        nargs="?",
        const="",
        default=None,
        metavar="DEVICE",
        help="talk on the call yourself: its audio on this machine's speakers and microphone "
        "(the default device, or DEVICE from `python -m sounddevice`), no agent",
    )
    calls = sub.add_parser("calls", help="list calls of the running gateway (its HTTP API)")
    calls.add_argument("--all", action="store_true", help="ended calls too (newest first)")
    calls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    sub.add_parser("settings", help="list every setting with its environment name and value")
    sub.add_parser(
        "doctor",
        help="check ports, the advertised address (NAT), codecs, speech models and "
        "registrations; says what to do about each problem",
    )
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
        from callbridge.cli import doctor

        return doctor.run(settings)
    if command == "calls":
        return _list_calls(settings, ended=args.all, limit=args.limit)
    # Imported here: the other commands answer without importing the whole gateway.
    from callbridge.cli.place_call import place_call
    from callbridge.cli.workers import run_serve

    try:
        if command == "call":
            return asyncio.run(
                place_call(
                    settings,
                    args.target,
                    args.agent,
                    args.duration,
                    via=args.via,
                    account=args.account,
                    listen=args.listen,
                    answer_timeout=args.ring_timeout,
                )
            )
        return run_serve(
            settings,
            args.config,
            getattr(args, "workers", None),
            getattr(args, "worker_index", None),
            getattr(args, "advertise", None),
        )
    except ConfigError as exc:
        print(f"callbridge: bad setting {exc}", file=sys.stderr)
        return 2
    except AudioDeviceError as exc:
        print(f"callbridge: {exc}", file=sys.stderr)
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


def _list_calls(settings: Settings, *, ended: bool, limit: int) -> int:
    import httpx

    host = settings.http.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://{host}:{settings.http.port}/calls"
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    params = {"limit": str(limit)} if ended else {"live": "true", "limit": str(limit)}
    try:
        response = httpx.get(url, params=params, headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        print(
            f"callbridge: no gateway API at {url} ({type(exc).__name__}); is `callbridge serve` "
            "running with its HTTP API on (CALLBRIDGE_HTTP_ENABLED=true)?",
            file=sys.stderr,
        )
        return 1
    if response.status_code != 200:
        hint = " (set CALLBRIDGE_API_TOKEN)" if response.status_code in (401, 403) else ""
        print(f"callbridge: {url} answered HTTP {response.status_code}{hint}", file=sys.stderr)
        return 1
    print(format_calls(response.json().get("calls", []), now=time.time()))
    return 0


def format_calls(items: Sequence[dict[str, Any]], now: float) -> str:
    """A table of calls as GET /calls returns them (live ones first)."""
    if not items:
        return "no calls"
    rows = [("ID", "STATE", "VIA", "DIR", "FROM", "TO", "AGENT", "DURATION")]
    for c in items:
        started, done = c.get("started"), c.get("ended")
        seconds = (done or now) - started if isinstance(started, int | float) else None
        state = "live" if c.get("live") else str(c.get("end_reason") or "ended")
        rows.append(
            (
                str(c.get("id", "")),
                state,
                str(c.get("transport", "")),
                str(c.get("direction", ""))[:3],
                str(c.get("from") or ""),
                str(c.get("to") or ""),
                str(c.get("agent") or ""),
                "" if seconds is None else f"{int(seconds // 60)}:{int(seconds % 60):02d}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


if __name__ == "__main__":
    raise SystemExit(main())
