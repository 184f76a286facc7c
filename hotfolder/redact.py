"""Credentials out of everything hotfolder shows or writes, and control characters out of log lines.

Every URL, header and server answer that reaches a log line, a sidecar, a status file, an error file or
the terminal passes through here:

* :func:`redact_url`: a URL without its ``user:password@`` and with the value of every query or
  fragment parameter whose name looks like a credential (``token``, ``api_key``, ``access_token``,
  ``sig``, ``X-Amz-Signature``, ``password``, ``session``, ... any name ending so) replaced by ``***``:
  ``http://u:pw@gpu1:8188/x?token=abc&v=2`` becomes ``http://gpu1:8188/x?token=***&v=2``. Scheme, host,
  port, path and harmless parameters stay, so the result still says which server it was.
* :func:`redact_text`: free text (error messages, server and proxy answers, exception texts): every URL
  in it as above; the value of ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie``
  to the end of its line (in raw, JSON or repr form); ``Bearer``/``Basic`` credentials; JSON web tokens;
  and ``name=value`` or ``name: value`` pairs whose name looks like a credential.
* :func:`redact_data`: the same for every string in a JSON-like structure, and the whole value of a key
  whose name looks like a credential.
* :func:`escape_control`: control characters (C0, DEL, C1), line and paragraph separators, bidi
  overrides and lone surrogates written as ``\\n``, ``\\x1b``, ``\\u2028``..., so one log record is one
  line whatever a file name holds.

Redaction recognises credentials by where they stand (their name, header or scheme), not by their
value: a secret in a URL path or under an innocent name is not found. Values are taken to end at white
space, a quote, a backslash, ``&``, ``;`` or ``,`` (header values: at the end of the line, a quote or a
backslash), as tokens do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

MASK = "***"

# A name (query parameter, header, JSON key, ``name=value``) whose value is a credential: it ends with one
# of these, in any case (``access_token``, ``X-Amz-Security-Token``, ``client_secret``, ``sessionId``).
_SECRET_NAME = re.compile(
    r"(?:token|secret|password|passwd|passphrase|pwd|pass|api[-_]?key|apikey|access[-_]?key|private[-_]?key"
    r"|signature|sig|credentials?|session|session[-_]?id|sid|cookie2?|jwt|auth|authorization|bearer)$",
    re.IGNORECASE)
# In a URL also ``key=`` (Google's API keys) and any ``...key`` (``subscription-key``).
_SECRET_URL_NAME = re.compile(r"key$", re.IGNORECASE)

_START = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?/*")  # "scheme:" and slashes before the authority
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]*\]|[^:@\[\]/?#]*)(?::[0-9]*)?")
_PARAM = re.compile(r"(?P<lead>[?&;#])(?P<name>[^=&;#?]*)=(?P<value>[^&;#]*)")

# (the look-behinds make each word be tried once, from its start: no quadratic backtracking on long words)
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>\\`]+")
_HEADER_LINE = re.compile(
    r"(?P<name>(?:proxy-)?authorization|(?:set-)?cookie2?)(?P<sep>(?:\\?[\"'])?[ \t]*[:=][ \t]*(?:\\?[\"'])?)"
    r"(?P<value>[^\r\n\"'\\]+)", re.IGNORECASE)
_SCHEME_CREDENTIAL = re.compile(r"\b(?P<name>Bearer|Basic|Digest|Negotiate)(?P<sep>[ \t]+)(?P<value>[A-Za-z0-9._~+/=-]+)")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PAIR = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>(?:\\?[\"'])?[ \t]*[:=][ \t]*(?:\\?[\"'])?)"
    r"(?P<value>[^\s\"'\\&;,<>)\]}]+)")

_SCHEME_WORDS = re.compile("Bearer|Basic|Digest|Negotiate")
_NAME_WORDS = re.compile("token|secret|pass|pwd|key|sig|credential|session|sid|cookie|jwt|auth|bearer")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def is_secret_name(name: str, *, url: bool = False) -> bool:
    """Whether a parameter, header or key called ``name`` holds a credential."""
    name = name.strip().strip("\"'")
    return bool(_SECRET_NAME.search(name) or (url and _SECRET_URL_NAME.search(name)))


def redact_url(url: Any) -> str:
    """``url`` without userinfo, with credential-like parameter values and any fragment replaced by ``***``. Never
    raises: a malformed URL is redacted as well as its parts can be told apart."""
    url = str(url)
    found = _START.match(url)
    start = found.end() if found else 0  # it always matches (the empty string at least)
    rest = url[start:]  # from the authority on, after "scheme://" if any ("http:/u:pw@h" and "u:pw@h" too)
    end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0 and "@" in rest:
        # "http://u:pa?ss@host" or "http://u:p#w@host": a password holding ? or # cut the URL short. Unless
        # the '@' is in a parameter's value ("?email=a@b" after a valid host), all before it is userinfo.
        last = rest.rfind("@")
        authority = re.match(r"[^/?#]*", rest)
        if authority is None or not _HOST_PORT.fullmatch(authority.group()) or "=" not in rest[end:last]:
            at = last
    if at >= 0:
        url = url[:start] + rest[at + 1:]
    url, hash_, _fragment = url.partition("#")  # never sent to a server, and where some flows put tokens
    return _PARAM.sub(_mask_param, url) + (f"#{MASK}" if hash_ else "")


def _mask_param(match: re.Match[str]) -> str:
    if match.group("value") and is_secret_name(unquote(match.group("name")), url=True):
        return f"{match.group('lead')}{match.group('name')}={MASK}"
    return match.group()


def _mask_value(match: re.Match[str]) -> str:
    return f"{match.group('name')}{match.group('sep')}{MASK}"


def _mask_pair(match: re.Match[str]) -> str:
    if match.group("value") != MASK and is_secret_name(match.group("name")):
        return _mask_value(match)
    return match.group()


def redact_text(text: Any) -> str:
    """``text`` with every credential found in it (URLs, auth and cookie headers, bearer tokens, JWTs,
    credential-named pairs) replaced by ``***``."""
    text = str(text)
    lower = text.lower()
    # each pattern runs only when the words it needs are there: most log lines have none of them
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group()), text)
    if "authorization" in lower or "cookie" in lower:
        text = _HEADER_LINE.sub(_mask_value, text)
    if _SCHEME_WORDS.search(text):
        text = _SCHEME_CREDENTIAL.sub(lambda m: m.group() if m.group("value") == MASK else _mask_value(m), text)
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    if _NAME_WORDS.search(lower):
        text = _PAIR.sub(_mask_pair, text)
    return text


def redact_data(data: Any) -> Any:
    """A copy of a JSON-like ``data`` with every string redacted and the value of every credential-named
    key replaced by ``***``. Other values (numbers, booleans, None) are kept."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, Mapping):
        return {key: MASK if isinstance(key, str) and is_secret_name(key) and value not in (None, "")
                and not isinstance(value, bool | int | float) else redact_data(value)
                for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(item) for item in data]
    return data


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters, line separators, bidi overrides and lone surrogates escaped
    (``\\n``, ``\\x1b``, ``\\u2028``); with ``keep_newlines``, ``\\n`` stays (tracebacks)."""
    if keep_newlines:
        return "\n".join(_CONTROL.sub(_escape, line) for line in text.split("\n"))
    return _CONTROL.sub(_escape, text)
