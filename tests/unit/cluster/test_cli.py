"""`callbridge serve --workers N`: which of supervisor, worker or lone gateway runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from callbridge.cli import workers as cli_workers
from callbridge.cli.main import main
from callbridge.config.settings import Settings


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Replaces the three ways of serving by recorders; main()'s logging set-up is undone."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    seen: dict[str, Any] = {}

    async def supervise(settings: Settings, count: int, config_file: str | None) -> int:
        seen["supervise"] = (count, config_file)
        return 0

    async def serve(settings: Settings, *, http_optional: bool = False) -> None:
        seen["serve"] = settings
        seen["http_optional"] = http_optional

    monkeypatch.setattr(cli_workers, "supervise", supervise)
    monkeypatch.setattr(cli_workers, "serve", serve)
    monkeypatch.setattr(cli_workers, "cpu_count", lambda: 4)
    for key in ("CALLBRIDGE_WORKERS", "CALLBRIDGE_STORE_URL", "CALLBRIDGE_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    yield seen
    root.handlers[:] = handlers
    root.setLevel(level)


def test_workers_flag_starts_the_supervisor(ran: dict[str, Any]) -> None:
    assert main(["serve", "--workers", "3"]) == 0
    assert ran == {"supervise": (3, None)}


def test_auto_is_one_per_core(ran: dict[str, Any]) -> None:
    assert main(["serve", "--workers", "auto"]) == 0
    assert ran == {"supervise": (4, None)}


def test_default_with_sqlite_is_the_lone_gateway(ran: dict[str, Any]) -> None:
    assert main([]) == 0  # `callbridge` alone is `serve`
    assert set(ran) == {"serve", "http_optional"}
    assert ran["serve"].sip.port == 5060
    assert ran["http_optional"] is False  # its HTTP, when required, must start


def test_default_with_postgresql_is_still_one_gateway(
    ran: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit of a Kamailio deployment (deploy/systemd/callbridge@.service) must stay one."""
    monkeypatch.setenv("CALLBRIDGE_STORE_URL", "postgresql://cb@127.0.0.1/cb")
    assert main(["serve"]) == 0
    assert set(ran) == {"serve", "http_optional"}


def test_the_workers_setting_starts_the_supervisor(
    ran: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLBRIDGE_WORKERS", "auto")
    assert main(["serve"]) == 0
    assert ran == {"supervise": (4, None)}


def test_a_worker_serves_its_own_settings(ran: dict[str, Any]) -> None:
    argv = ["serve", "--workers", "2", "--worker-index", "1", "--advertise", "192.0.2.9"]
    assert main(argv) == 0
    settings = ran["serve"]
    assert (settings.sip.port, settings.sip.public_host) == (5062, "192.0.2.9")
    assert settings.http.enabled == "false"
    assert ran["http_optional"] is True  # a busy internal API port must not stop a worker
    # every line it prints names it
    record = logging.LogRecord("x", logging.INFO, "", 0, "call.started", None, None)
    for handler in logging.getLogger().handlers:
        handler.filter(record)
    assert getattr(record, "fields", None) == {"worker": 1}


def test_bad_values_exit_2(ran: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "lots"]) == 2
    assert "workers" in capsys.readouterr().err
    assert main(["serve", "--workers", "1", "--worker-index", "0"]) == 2
    assert ran == {}
