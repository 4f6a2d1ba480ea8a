"""Secrets in `--endpoint` URLs never leave the process in clear.

An endpoint may carry credentials: `https://user:password@host/...` or a token in the query
(`?token=...`, `?X-Amz-Signature=...`: any parameter may be one, so every query value counts).
The URL as given is kept only in memory, for the create's own POST; the state file, the log,
`status`, results and warnings see `redact_url(url)`: userinfo and every query and fragment
value replaced by `***`, parameter names kept. Anything that stores only the redacted form
(a later POST from another process, e.g. on timeout) cannot authenticate: it must say so.
"""
from __future__ import annotations

import urllib.parse
from typing import Iterable, List

MASK = "***"


def redact_url(url: str) -> str:
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK
    netloc = u.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = "&".join(_mask_pair(p) for p in u.query.split("&")) if u.query else ""
    fragment = MASK if u.fragment else ""
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, query, fragment))


def _mask_pair(pair: str) -> str:
    name, eq, value = pair.partition("=")
    return f"{name}={MASK}" if eq else (MASK if name else "")


def secrets_of(url: str) -> List[str]:
    """The secret parts of url (userinfo, query and fragment values), raw and %-decoded."""
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    parts = []
    if "@" in u.netloc:
        userinfo = u.netloc.rsplit("@", 1)[0]
        parts += [userinfo, *userinfo.split(":", 1)]
    for pair in u.query.split("&") if u.query else ():
        name, eq, value = pair.partition("=")
        parts.append(value if eq else name)
    if u.fragment:
        parts.append(u.fragment)
    parts = [p for p in parts if p]
    parts += [urllib.parse.unquote_plus(p) for p in parts]
    return sorted(set(parts), key=len, reverse=True)  # longest first: no partial leftovers


def scrub(text: str, url: str) -> str:
    """text (e.g. an HTTP library's error) with url and its secrets replaced."""
    text = text.replace(url, redact_url(url))
    for secret in secrets_of(url):
        if len(secret) >= 3:  # shorter ones would mangle unrelated text (ports, counts)
            text = text.replace(secret, MASK)
    return text


def redact_argv(argv: Iterable[str]) -> List[str]:
    """A command line with the value of every --endpoint redacted (for logs)."""
    out, after_flag = [], False
    for a in argv:
        if after_flag:
            out.append(redact_url(a))
            after_flag = False
        elif a == "--endpoint":
            out.append(a)
            after_flag = True
        elif a.startswith("--endpoint="):
            out.append("--endpoint=" + redact_url(a[len("--endpoint="):]))
        else:
            out.append(a)
    return out
