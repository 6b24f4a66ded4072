"""The [twilio] settings and [http] enabled: env names (Twilio's own too), validation that
names the field and the fix, and the auth token never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from callbridge.cli import main as cli
from callbridge.config.settings import env_name, http_wanted, load_settings
from callbridge.core.errors import ConfigError

SID = "AC" + "0123456789abcdef" * 2


def test_defaults() -> None:
    s = load_settings(environ={})
    assert (s.twilio.account_sid, s.twilio.auth_token, s.twilio.validate) == ("", "", True)
    assert s.http.enabled == "auto"
    assert http_wanted(s)  # on loopback by default: the softphone page (issue 13)


@pytest.mark.parametrize(
    ("dotted", "env"),
    [
        ("twilio.account_sid", "CALLBRIDGE_TWILIO_ACCOUNT_SID"),
        ("twilio.auth_token", "CALLBRIDGE_TWILIO_AUTH_TOKEN"),
        ("twilio.validate", "CALLBRIDGE_TWILIO_VALIDATE"),
        ("twilio.from_number", "CALLBRIDGE_TWILIO_FROM_NUMBER"),
        ("http.enabled", "CALLBRIDGE_HTTP_ENABLED"),
    ],
)
def test_env_names(dotted: str, env: str) -> None:
    assert env_name(dotted) == env


def test_twilio_env_names_are_read_and_callbridge_ones_win() -> None:
    s = load_settings(environ={"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "tok1"})
    assert (s.twilio.account_sid, s.twilio.auth_token) == (SID, "tok1")
    s = load_settings(environ={"TWILIO_AUTH_TOKEN": "tok1", "CALLBRIDGE_TWILIO_AUTH_TOKEN": "tok2"})
    assert s.twilio.auth_token == "tok2"
    assert http_wanted(s)  # credentials mean webhooks: serve HTTP


def test_validation_switch() -> None:
    assert not load_settings(environ={"CALLBRIDGE_TWILIO_VALIDATE": "false"}).twilio.validate
    with pytest.raises(ConfigError, match="true or false"):
        load_settings(environ={"CALLBRIDGE_TWILIO_VALIDATE": "sometimes"})


def test_file_section(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[twilio]\naccount_sid = "{SID}"\nfrom_number = "+15551234567"\n')
    s = load_settings(cfg, environ={})
    assert (s.twilio.account_sid, s.twilio.from_number) == (SID, "+15551234567")


@pytest.mark.parametrize(
    ("env", "field", "words"),
    [
        ({"TWILIO_ACCOUNT_SID": "AC123"}, "twilio.account_sid (env TWILIO_ACCOUNT_SID)", "AC"),
        ({"CALLBRIDGE_TWILIO_FROM_NUMBER": "555-1234"}, "twilio.from_number", "E.164"),
        ({"CALLBRIDGE_HTTP_ENABLED": "yes"}, "http.enabled", "auto, true, false"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(env: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ=env)
    assert exc.value.field.startswith(field)
    assert words in str(exc.value)


def test_auth_token_is_never_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_settings(environ={"TWILIO_AUTH_TOKEN": "sekrit-token-value"})
    assert "sekrit" not in repr(s) and "sekrit" not in repr(s.twilio)
    for key in [k for k in os.environ if k.startswith(("CALLBRIDGE_", "TWILIO_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "sekrit-token-value")
    monkeypatch.setattr(cli, "setup_logging", lambda *a: None)  # keep pytest's log handlers
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "sekrit" not in out
    assert "CALLBRIDGE_TWILIO_AUTH_TOKEN" in out


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, True),  # 127.0.0.1: the softphone page
        ({"CALLBRIDGE_HTTP_ENABLED": "false"}, False),
        ({"CALLBRIDGE_HTTP_HOST": "10.0.0.5", "CALLBRIDGE_API_TOKEN": "t"}, True),
        ({"CALLBRIDGE_PUBLIC_URL": "https://x.example.com"}, True),
        ({"CALLBRIDGE_API_TOKEN": "t"}, True),
        ({"CALLBRIDGE_HTTP_ENABLED": "true"}, True),
        (
            {"CALLBRIDGE_PUBLIC_URL": "https://x.example.com", "CALLBRIDGE_HTTP_ENABLED": "false"},
            False,
        ),
    ],
)
def test_http_enabled(env: dict[str, str], wanted: bool) -> None:
    assert http_wanted(load_settings(environ=env)) is wanted
