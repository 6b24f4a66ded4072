"""baresip 1.0.0 as a headless softphone: per-test config dir, ctrl_tcp client, recordings.

Pitfalls (shared testbed README): aufile is only a source (8 kHz mono S16 WAV, padded
with silence, since EOF makes menu.so hang up); sndfile records `dump-<time>-dec.wav`
(received) holding only frames that actually arrived; `net_interface` must be an
address; SIP also binds TCP SIP_PORT and TLS SIP_PORT+1, so the control port must
differ from both; ctrl_tcp pushes events only to clients already connected.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .process import (
    LOOPBACK,
    DeadlineExceeded,
    ManagedProcess,
    ProcessRegistry,
    wait_tcp_listening,
)

CONFIG_TEMPLATE = """\
poll_method\t\tepoll
sip_listen\t\t{host}:{sip_port}
net_interface\t\t{host}
dns_server\t\t{host}:53
call_local_timeout\t120
call_max_calls\t\t4
audio_source\t\taufile,{source_wav}
audio_level\t\tno
ausrc_format\t\ts16
auplay_format\t\ts16
auenc_format\t\ts16
audec_format\t\ts16
audio_buffer\t\t20-160
rtp_tos\t\t\t0
rtp_ports\t\t{rtp_min}-{rtp_max}
rtcp_mux\t\tno
jitter_buffer_delay\t5-10
rtp_stats\t\tyes
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\tsndfile.so
module\t\t\taufile.so
module_tmp\t\tuuid.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t{host}:{ctrl_port}
snd_path\t\t{rec_dir}
statmode_default\toff
ringback_disabled\tyes
"""

ACCOUNT_TEMPLATE = (
    "<sip:{user}@{host}:{sip_port}>;regint=0;answermode={answermode};"
    "audio_codecs={codecs};ptime=20\n"
)


@dataclass(frozen=True, slots=True)
class BaresipConfig:
    confdir: Path
    user: str
    sip_port: int
    ctrl_port: int
    rtp_range: tuple[int, int]
    source_wav: Path
    answermode: str = "manual"
    codecs: str = "PCMU/8000/1,PCMA/8000/1"

    @property
    def rec_dir(self) -> Path:
        return self.confdir / "rec"

    def write(self) -> None:
        if self.ctrl_port in (self.sip_port, self.sip_port + 1):
            raise ValueError("ctrl_tcp port collides with baresip's SIP TCP/TLS ports")
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        (self.confdir / "config").write_text(
            CONFIG_TEMPLATE.format(
                host=LOOPBACK,
                sip_port=self.sip_port,
                source_wav=self.source_wav,
                rtp_min=self.rtp_range[0],
                rtp_max=self.rtp_range[1],
                ctrl_port=self.ctrl_port,
                rec_dir=self.rec_dir,
            )
        )
        (self.confdir / "accounts").write_text(
            ACCOUNT_TEMPLATE.format(
                user=self.user,
                host=LOOPBACK,
                sip_port=self.sip_port,
                answermode=self.answermode,
                codecs=self.codecs,
            )
        )

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile's dump-*-dec.wav (what was received) or -enc.wav (what was sent)."""
        return sorted(self.rec_dir.glob(f"dump-*-{kind}.wav"))


def start_baresip(
    registry: ProcessRegistry, name: str, cfg: BaresipConfig, lifetime_s: int = 60
) -> ManagedProcess:
    """Start baresip (its own `-t` lifetime is a safety net) and wait for ctrl_tcp."""
    cfg.write()
    proc = registry.start(
        name, ["baresip", "-f", str(cfg.confdir), "-t", str(lifetime_s)], stop_signal=signal.SIGTERM
    )
    try:
        wait_tcp_listening(cfg.ctrl_port, 15.0, f"baresip {name} ctrl_tcp on {cfg.ctrl_port}")
    except DeadlineExceeded:
        raise AssertionError(f"baresip did not start:\n{proc.stdout_text()[-4000:]}") from None
    return proc


@dataclass(eq=False)
class BaresipCtl:
    """Netstring-JSON client for ctrl_tcp: commands out, events in (all with deadlines)."""

    sock: socket.socket
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    _buf: bytes = b""
    _token: int = 0
    _consumed: int = 0  # events before this index were already matched by wait_event

    @classmethod
    def connect(cls, port: int, timeout: float = 10.0) -> BaresipCtl:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((LOOPBACK, port), timeout=2.0)
                return cls(sock)
            except OSError:
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(f"cannot connect to baresip ctrl_tcp {port}") from None
                time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def command(self, name: str, params: str | None = None) -> None:
        self._token += 1
        msg: dict[str, Any] = {"command": name, "token": f"t{self._token}"}
        if params is not None:
            msg["params"] = params
        data = json.dumps(msg).encode()
        self.sock.sendall(b"%d:%s," % (len(data), data))

    def pump(self, until: float) -> None:
        """Read and store messages until monotonic time `until` (or the socket closes)."""
        while not self.closed:
            self._parse()
            left = until - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self._buf += data
        self._parse()

    def _parse(self) -> None:
        while True:
            colon = self._buf.find(b":")
            if colon < 0:
                return
            n = int(self._buf[:colon])
            if len(self._buf) < colon + n + 2:
                return
            msg = json.loads(self._buf[colon + 1 : colon + 1 + n])
            self._buf = self._buf[colon + 2 + n :]
            (self.events if msg.get("event") else self.responses).append(msg)

    def wait_event(self, etype: str, timeout: float) -> dict[str, Any]:
        """The next not-yet-consumed event of type `etype`."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._consumed, len(self.events)):
                if self.events[i].get("type") == etype:
                    self._consumed = i + 1
                    return self.events[i]
            if self.closed or time.monotonic() >= deadline:
                seen = [e.get("type") for e in self.events]
                raise DeadlineExceeded(f"baresip event {etype} not seen in {timeout} s; saw {seen}")
            self.pump(min(deadline, time.monotonic() + 0.2))

    def hold(self, seconds: float, forbidden: str = "CALL_CLOSED") -> None:
        """Keep the call up for `seconds`, failing if a `forbidden` event arrives meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump(min(deadline, time.monotonic() + 0.2))
            early = [e for e in self.events[self._consumed :] if e.get("type") == forbidden]
            if early:
                raise AssertionError(f"baresip: {forbidden} during the call: {early[0]}")
            if self.closed:
                raise AssertionError("baresip closed the ctrl_tcp connection during the call")

    def event_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]
