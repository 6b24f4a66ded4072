"""Shared RFC 3261 §25 lexical helpers: tokens, quoted strings, generic params, list splitting.

All regexes are linear (no nested quantifiers over overlapping alternatives) so hostile
input cannot trigger catastrophic backtracking.
"""

from __future__ import annotations

import operator
import re

from callbridge.core.errors import ProtocolError

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{TOKEN_CHARS}]+")

# quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE; quoted-pair never escapes CR or LF.
# Repeats of an alternation are possessive (*+, ++): the alternatives start with disjoint
# characters, so the language is the same, but re then keeps no backtracking frame per
# character (a 64 KiB quoted string or URI part cost 8 MB and 5 ms; now nothing and 1 ms).
QUOTED_RE = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*+"')
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_FIRST_GROUP = operator.itemgetter(1)

# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string.
# Values are accepted a little more liberally than the grammar (anything up to a separator)
# so that real-world peers with sloppy params are not rejected; separators are what matter
# for framing.
_PARAM_RE = re.compile(
    rf'[ \t]*;[ \t]*([{TOKEN_CHARS}]+)(?:[ \t]*=[ \t]*("(?:[^"\\\r\n]|\\[^\r\n])*+"|[^\s;,"<>]+))?[ \t]*'
)

Params = tuple[tuple[str, str | None], ...]


class GrammarError(ProtocolError, ValueError):
    """Internal: a lexical rule failed; callers re-raise as their own error type."""


def is_token(text: str) -> bool:
    return TOKEN_RE.fullmatch(text) is not None


def unquote(text: str) -> str:
    """Strip the DQUOTEs of a quoted-string and undo quoted-pairs."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    # A C-level replacement callable: a template ("\\1") is expanded in Python per match,
    # 5x slower on a hostile 64 KiB string of escapes.
    return _UNESCAPE_RE.sub(_FIRST_GROUP, inner)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str, pos: int = 0) -> Params:
    """Parse `*( SEMI generic-param )` from `text[pos:]`; the whole remainder must be consumed."""
    out: list[tuple[str, str | None]] = []
    end = len(text)
    while pos < end:
        m = _PARAM_RE.match(text, pos)
        if m is None:
            raise GrammarError(f"bad parameter near {text[pos : pos + 20]!r}")
        out.append((m.group(1), m.group(2)))
        pos = m.end()
    return tuple(out)


def format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def find_param(params: Params, name: str) -> str | None:
    """Case-insensitive lookup; "" for a flag param, None when absent."""
    lname = name.lower()
    for n, v in params:
        if n.lower() == lname:
            return "" if v is None else v
    return None


def has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    return any(n.lower() == lname for n, _ in params)


def replace_params(params: Params, changes: dict[str, str | None]) -> Params:
    """Replace (keeping position) or append each change; a None value writes a flag param."""
    out = list(params)
    for name, value in changes.items():
        lname = name.lower()
        for i, (n, _) in enumerate(out):
            if n.lower() == lname:
                out[i] = (n, value)
                break
        else:
            out.append((name, value))
    return tuple(out)


def split_list(value: str, *, keep_empty: bool = False) -> list[str]:
    """Split a comma-separated header value (RFC 3261 §7.3.1), respecting quotes and <>."""
    if "," not in value:
        v = value.strip()
        return [v] if v or keep_empty else []
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    escaped = False
    for i, ch in enumerate(value):
        if in_quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    if keep_empty:
        return parts
    return [p for p in parts if p]
