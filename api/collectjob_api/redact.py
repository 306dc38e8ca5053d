"""Keeping credentials out of what the operator and the worker say: logs, events, status,
the checkpoint's `error` and exception messages.

A URL may carry a secret in three places: the userinfo (`https://user:secret@host/`), the
query (`X-Amz-Signature=…`, `sig=…`, `token=…`) and the fragment. `redact_url` keeps only
scheme, host, port and path, which is enough to say *which* object failed; `redact_text`
does the same to every URL inside a free-text message (an exception's text often quotes
the URL it was given). `bounded` caps a message so that a tenant cannot grow a ConfigMap or
a status field with an error of its own making.
"""

from __future__ import annotations

import re
import urllib.parse

REDACTED = "<redacted>"
"""Stands in for a dropped userinfo, query or fragment, so a reader sees something was there."""
UNPARSEABLE = "<unparseable URL>"
TRUNCATION_MARKER = "...[truncated]"
DEFAULT_TEXT_LIMIT = 1024
"""Characters of error text kept by `bounded` unless the caller says otherwise."""

_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def redact_url(url: str) -> str:
    """`scheme://host:port/path` of `url`, with userinfo, query and fragment replaced by a
    marker. Never raises.

    A password is not always percent-encoded: in `https://u:p/ss@host/` or
    `https://u:p?ss@host/` a parser sees no userinfo at all and would print the secret as
    host and path. So when an `@` follows a `/`, `?` or `#`, the URL is ambiguous and only
    its scheme is kept.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo = rest[: rest.rfind("@")]
        if any(c in userinfo for c in "/?#"):
            return f"{scheme}://{REDACTED}"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return UNPARSEABLE
    _, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{REDACTED}@{hostport}" if at else hostport
    query = REDACTED if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """`text` with every `scheme://…` URL in it passed through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def bounded(text: str, limit: int = DEFAULT_TEXT_LIMIT) -> str:
    """`text` cut to at most `limit` characters, ending in TRUNCATION_MARKER when cut."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(TRUNCATION_MARKER))
    return text[:keep] + TRUNCATION_MARKER[: limit - keep]


def safe_message(text: str, limit: int = DEFAULT_TEXT_LIMIT) -> str:
    """What may be stored or shown: `text` redacted, then bounded (in that order, so a cut
    never leaves half a URL unredacted)."""
    return bounded(redact_text(text), limit)
