"""`callbridge doctor`: each check on the situations it tells apart, and the command itself."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest

from callbridge.cli import doctor
from callbridge.cli.doctor import Check
from callbridge.config.accounts import AccountSettings
from callbridge.config.settings import Settings, load_settings


def base(**sip: object) -> Settings:
    s = load_settings(environ={})
    return replace(s, sip=replace(s.sip, **{"host": "127.0.0.1", "port": 0, **sip}))


def test_a_taken_sip_port_fails_with_what_to_do() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        s = base()
        s = replace(s, sip=replace(s.sip, port=port), rtp=replace(s.rtp, port_min=port + 2))
        sip = next(doctor.ports(s))
    assert sip.status == "fail" and f"127.0.0.1:{port}" in sip.what, sip
    assert "CALLBRIDGE_SIP_PORT" in sip.hint
    assert next(doctor.ports(base())).status == "ok"


def test_rtp_range_too_small_or_partly_taken() -> None:
    s = base()
    tiny = [c for c in doctor.ports(replace(s, rtp=replace(s.rtp, port_min=30000, port_max=30001)))]
    assert tiny[-1].status == "fail" and "room for 1" in tiny[-1].what, tiny
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        shared = list(
            doctor.ports(replace(s, rtp=replace(s.rtp, port_min=port, port_max=port + 99)))
        )
    assert shared[-1].status == "warn" and "in use" in shared[-1].what, shared


@pytest.mark.parametrize(
    ("sip", "local", "status", "words"),
    [
        ({"public_host": "203.0.113.7"}, None, "ok", "203.0.113.7 (sip.public_host)"),
        ({}, None, "warn", "loopback"),
        ({"host": "0.0.0.0"}, "192.168.1.20", "warn", "behind NAT"),
        ({"host": "0.0.0.0"}, "8.8.4.4", "ok", "(public)"),
        ({"host": "0.0.0.0"}, None, "warn", "loopback only"),
    ],
)
def test_the_advertised_address_and_nat_hints(
    sip: dict[str, str], local: str | None, status: str, words: str
) -> None:
    (check,) = doctor.addressing(base(**sip), local=lambda: local)
    assert check.status == status and words in check.what, check
    if "NAT" in words:
        assert "CALLBRIDGE_SIP_PUBLIC_HOST" in check.hint and "[accounts.NAME]" in check.hint


def test_the_speech_models_of_this_install_are_present() -> None:
    found = list(doctor.models(base()))
    assert [c.status for c in found] == ["ok", "ok", "ok"], found
    assert "Whisper" in found[0].what and "piper" in found[1].what
    light = replace(base(), agent=replace(base().agent, stt="pocketsphinx"))
    assert "pocketsphinx" in next(doctor.models(light)).what
    missing = replace(base(), agent=replace(base().agent, stt_model="/nonexistent"))
    check = next(doctor.models(missing))
    assert check.status == "fail" and "CALLBRIDGE_AGENT_STT_MODEL" in check.hint


def with_account(register: bool = True) -> Settings:
    acct = AccountSettings("trunk", "sip.example.net", "alice", "pw", register=register)
    return replace(base(), accounts={"trunk": acct})


def test_registrations_from_a_running_gateway_or_what_to_do_without_one() -> None:
    def none_running(url: str, headers: dict[str, str]) -> object:
        raise ConnectionRefusedError(url)

    (c,) = doctor.registrations(with_account(), fetch=none_running)
    assert c.status == "warn" and "callbridge serve" in c.hint, c

    def answer(state: str, reason: str = "") -> object:
        return lambda url, headers: {
            "registrations": [{"account": "trunk", "state": state, "reason": reason}]
        }

    (c,) = doctor.registrations(with_account(), fetch=answer("registered"))  # type: ignore[arg-type]
    assert c == Check("ok", "account trunk: registered at sip.example.net")
    (c,) = doctor.registrations(with_account(), fetch=answer("failed", "403 Forbidden"))  # type: ignore[arg-type]
    assert c.status == "fail" and "403" in c.what and "password" in c.hint, c
    assert list(doctor.registrations(with_account(register=False), fetch=none_running)) == []


def test_report_colours_and_exit_status() -> None:
    out = io.StringIO()
    assert doctor.report([Check("ok", "fine"), Check("warn", "hmm", "do x")], out, False) == 0
    assert out.getvalue() == "ok   fine\nwarn hmm\n     -> do x\n0 failed, 1 warnings\n"
    out = io.StringIO()
    assert doctor.report([Check("fail", "broken", "fix it")], out, True) == 1
    assert "\033[31mFAIL\033[0m broken" in out.getvalue()


def test_the_command_exits_1_and_names_the_taken_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        env.update({"CALLBRIDGE_SIP_HOST": "127.0.0.1", "CALLBRIDGE_SIP_PORT": str(port)})
        done = subprocess.run(
            [sys.executable, "-m", "callbridge", "doctor"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAIL SIP UDP 127.0.0.1:{port}" in done.stdout, done.stdout
    assert "\033[" not in done.stdout  # not a terminal: no colour codes
