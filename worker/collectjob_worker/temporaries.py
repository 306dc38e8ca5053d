"""How a sink names the temporary file it writes beside a target before moving it into place.

Its own module because both the sinks (which write them) and the ownership claim and the
clean-up (which recognise them) need it, and the sinks import the ownership claim.
"""

from __future__ import annotations

import re

TEMP_PREFIX = ".tmp-"
_SUFFIX = "-[0-9a-f]{8}"


def temporary_name(target: str, token: str) -> str:
    """The temporary of `target`: `token` is 8 hex digits, unique per write."""
    return f"{TEMP_PREFIX}{target}-{token}"


def temporary_pattern(target: str = "[^/]+") -> str:
    """A regex matching the temporaries of `target` (a regex; by default any name)."""
    return f"{re.escape(TEMP_PREFIX)}{target}{_SUFFIX}"
