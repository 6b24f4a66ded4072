"""FastAGI: the request's environment block, the commands we send and Asterisk's replies.

Source: asterisk/asterisk@f0c1c1a7b79b0f8cc0311649bf36824cbeee30a9, res/res_agi.c.
`AGI(agi://host[:port][/script])` connects to port 4573 by default (line 1533, 2179-2254) and
writes `agi_network: yes`, then `agi_network_script: <everything after host/>` when there is a
script, then the environment (setup_env, lines 2449-2493: `agi_request` first, ..., one
`agi_arg_N` per argument) ending with an empty line. Every line ends in a bare LF.

Then the server writes one command per line; Asterisk splits it into words like a shell -
double quotes group, backslash escapes (parse_args, lines 4124-4181) - and answers
`200 result=<n>[ (<data>)][ key=value...]`, `510 Invalid or unknown command`, or a `520-`
usage block ending with a `520 ` line (lines 4215-4245). When the channel hangs up it may
send a bare `HANGUP` line (lines 4335, 4454).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl

from callbridge.asterisk.errors import AgiError

__all__ = [
    "AGI_PORT",
    "MAX_ENV_LINES",
    "MAX_LINE_BYTES",
    "AgiError",
    "AgiHangup",
    "AgiReply",
    "AgiReplyReader",
    "AgiRequest",
    "AgiRequestParser",
    "format_command",
    "format_environment",
    "parse_reply",
    "split_command",
]

AGI_PORT: Final = 4573
MAX_LINE_BYTES: Final = 8192  # AGI_BUF_LEN, res_agi.c:1519
# agi_network, agi_network_script, 20 fixed agi_* lines and up to MAX_ARGS (128) arguments.
MAX_ENV_LINES: Final = 160
_MAX_REPLY_LINES: Final = 64  # a 520 usage block is a screenful
_RESULT = re.compile(r"^(-?\d{1,10})(?: \((.*?)\))?((?: [A-Za-z_]+=\S*)*)\s*$")


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The environment Asterisk sends when a FastAGI call starts, in order."""

    env: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        for name, value in self.env:
            if name == key:
                return value
        return default

    @property
    def network(self) -> bool:
        return self.get("agi_network") == "yes"

    @property
    def script(self) -> str:
        """`agi_network_script`: what followed `agi://host[:port]/` (path and query)."""
        return self.get("agi_network_script")

    @property
    def route(self) -> str:
        """The script's path without its query: which agent the dialplan asked for."""
        return self.script.partition("?")[0].strip("/")

    @property
    def params(self) -> tuple[tuple[str, str], ...]:
        """The script's query (`agi://h/route?lang=de` gives (("lang", "de"),))."""
        return tuple(parse_qsl(self.script.partition("?")[2], max_num_fields=64))

    @property
    def uniqueid(self) -> str:
        return self.get("agi_uniqueid")

    @property
    def channel(self) -> str:
        return self.get("agi_channel")

    @property
    def callerid(self) -> str:
        return self.get("agi_callerid")

    @property
    def args(self) -> tuple[str, ...]:
        """The AGI() application's arguments after the URL, agi_arg_1 onwards."""
        found: dict[int, str] = {}
        for name, value in self.env:
            if name.startswith("agi_arg_") and name[8:].isdigit() and len(name) < 12:
                found[int(name[8:])] = value
        return tuple(found[i] for i in range(1, len(found) + 1) if i in found)


class AgiRequestParser:
    """Bytes in until the blank line; then `request` is set and `rest` holds what followed."""

    __slots__ = ("_buffer", "_env", "request", "rest")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._env: list[tuple[str, str]] = []
        self.request: AgiRequest | None = None
        self.rest = b""

    def feed(self, data: bytes) -> AgiRequest | None:
        """The request once its blank line arrived, else None; AgiError on garbage."""
        if self.request is not None:
            self.rest += data
            return self.request
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_BYTES:
                    raise AgiError(f"AGI environment line over {MAX_LINE_BYTES} bytes")
                return None
            if end > MAX_LINE_BYTES:
                raise AgiError(f"AGI environment line over {MAX_LINE_BYTES} bytes")
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if not line:
                if not self._env:
                    raise AgiError("empty AGI environment")
                self.request = AgiRequest(tuple(self._env))
                self.rest = bytes(self._buffer)
                self._buffer.clear()
                return self.request
            self._env.append(_env_line(line))
            if len(self._env) > MAX_ENV_LINES:
                raise AgiError(f"AGI environment over {MAX_ENV_LINES} lines")


def _env_line(line: bytes) -> tuple[str, str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("latin-1")  # caller names are not always UTF-8 on old PBXs
    name, sep, value = text.partition(": ")
    if not sep or not name.startswith("agi_") or not name.isascii() or " " in name:
        raise AgiError(f"not an AGI environment line: {text[:60]!r}")
    return name, value


def format_environment(env: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> bytes:
    """The block as res_agi.c writes it (for test peers): `name: value` lines and a blank one."""
    return b"".join(f"{k}: {v}\n".encode() for k, v in env) + b"\n"


# --- commands ---------------------------------------------------------------------------------


def _quote(word: str) -> str:
    if word and not any(c in word for c in ' \t"\\'):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_command(*words: str) -> bytes:
    """One command line, each word quoted so parse_args gives it back whole.

    format_command("EXEC", "AudioSocket", f"{uuid},127.0.0.1:9092") for the AudioSocket hand-off;
    format_command("ANSWER"); format_command("HANGUP")."""
    if not words or any("\n" in w or "\r" in w or "\0" in w for w in words):
        raise ValueError("AGI command words must be non-empty and without line breaks or NUL")
    line = " ".join(_quote(w) for w in words) + "\n"
    if len(line.encode()) > MAX_LINE_BYTES:
        raise ValueError(f"AGI command over {MAX_LINE_BYTES} bytes")
    return line.encode()


def split_command(line: str) -> list[str]:
    """A command line split as res_agi.c parse_args does (for test peers)."""
    words: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    for ch in line.rstrip("\r\n"):
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and cur is None:
                cur = []
                words.append("")
            continue
        if ch in " \t" and not quoted and not escaped:
            if cur is not None:
                words[-1] = "".join(cur)
            cur = None
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        escaped = False
        if cur is None:
            cur = []
            words.append("")
        cur.append(ch)
    if cur is not None:
        words[-1] = "".join(cur)
    return words[:127]  # MAX_ARGS - 1 words are kept


# --- replies ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiReply:
    """`200 result=1 (data) endpos=1234`: code 200, result 1, data "data", extras."""

    code: int
    result: int | None = None
    data: str | None = None
    extras: tuple[tuple[str, str], ...] = ()
    text: str = ""  # the message of a non-200 reply, usage lines joined by "\n"

    @property
    def ok(self) -> bool:
        return self.code == 200 and self.result is not None and self.result >= 0


@dataclass(frozen=True, slots=True)
class AgiHangup:
    """The bare `HANGUP` line: the channel hung up while the script ran."""


@dataclass(frozen=True, slots=True)
class _Pending:
    code: int
    lines: list[str] = field(default_factory=list)


def parse_reply(line: str) -> AgiReply | AgiHangup:
    """One complete reply line (not a `520-` continuation); AgiError if it is not a reply."""
    line = line.rstrip("\r\n")
    if line == "HANGUP":
        return AgiHangup()
    if len(line) > MAX_LINE_BYTES:
        raise AgiError("AGI reply line too long")
    code_text, sep, rest = line.partition(" ")
    if len(code_text) != 3 or not code_text.isascii() or not code_text.isdigit() or not sep:
        raise AgiError(f"not an AGI reply: {line[:60]!r}")
    code = int(code_text)
    if code != 200:
        return AgiReply(code, text=rest)
    if not rest.startswith("result="):
        raise AgiError(f"200 reply without result=: {line[:60]!r}")
    match = _RESULT.match(rest[7:])
    if match is None:
        raise AgiError(f"bad AGI result: {line[:60]!r}")
    extras = tuple((k, v) for k, _, v in (kv.partition("=") for kv in match.group(3).split()))
    return AgiReply(200, int(match.group(1)), match.group(2), extras)


class AgiReplyReader:
    """Bytes in, replies out, for the command phase of one FastAGI connection (bounded)."""

    __slots__ = ("_buffer", "_pending")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: _Pending | None = None

    def feed(self, data: bytes) -> list[AgiReply | AgiHangup]:
        self._buffer += data
        out: list[AgiReply | AgiHangup] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_BYTES:
                    raise AgiError(f"AGI reply line over {MAX_LINE_BYTES} bytes")
                return out
            if end > MAX_LINE_BYTES:
                raise AgiError(f"AGI reply line over {MAX_LINE_BYTES} bytes")
            line = bytes(self._buffer[:end]).decode("utf-8", "replace").rstrip("\r")
            del self._buffer[: end + 1]
            reply = self._line(line)
            if reply is not None:
                out.append(reply)

    def _line(self, line: str) -> AgiReply | AgiHangup | None:
        pending = self._pending
        if pending is not None:
            # A usage block: "520-Invalid ...", usage text, then "520 End of proper usage."
            if line.startswith(f"{pending.code} "):
                self._pending = None
                return AgiReply(pending.code, text="\n".join([*pending.lines, line[4:]]))
            if len(pending.lines) >= _MAX_REPLY_LINES:
                raise AgiError("AGI usage block too long")
            pending.lines.append(line)
            return None
        if len(line) > 3 and line[3] == "-" and line[:3].isascii() and line[:3].isdigit():
            self._pending = _Pending(int(line[:3]), [line[4:]])
            return None
        return parse_reply(line)
