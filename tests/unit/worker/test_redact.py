"""redact: no URL credential survives into a message, and messages stay bounded."""

from __future__ import annotations

import pytest

from collectjob_api.checkpoint import MAX_ERROR_CHARS, Checkpoint
from collectjob_api.redact import (
    REDACTED,
    TRUNCATION_MARKER,
    bounded,
    redact_text,
    redact_url,
    safe_message,
)

SECRET = "s3cr3t"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://user:{SECRET}@data.example:8443/a/b.csv?X-Amz-Signature={SECRET}#{SECRET}",
            f"https://{REDACTED}@data.example:8443/a/b.csv?{REDACTED}#{REDACTED}",
        ),
        (f"https://data.example/x.csv?sig={SECRET}&se=1", f"https://data.example/x.csv?{REDACTED}"),
        ("s3://bucket/key/orders.csv", "s3://bucket/key/orders.csv"),
        ("file:///data/orders.csv", "file:///data/orders.csv"),
        ("/data/orders.csv", "/data/orders.csv"),
        # unencoded delimiters in a password: a parser would see no userinfo at all
        (f"https://user:{SECRET}/x@data.example/a", f"https://{REDACTED}"),
        (f"https://user:{SECRET}?x@data.example/a", f"https://{REDACTED}"),
        (f"https://user:{SECRET}#x@data.example/a", f"https://{REDACTED}"),
        ("http://[::1/x", "<unparseable URL>"),
    ],
)
def test_redact_url_keeps_only_scheme_host_and_path(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_redacts_every_url_in_a_message() -> None:
    text = (
        f"cannot read source https://u:{SECRET}@h.example/x?sig={SECRET} after "
        f"redirect to http://169.254.169.254/latest?token={SECRET}"
    )
    redacted = redact_text(text)
    assert SECRET not in redacted
    assert "h.example/x" in redacted and "169.254.169.254/latest" in redacted


def test_bounded_cuts_with_a_marker_and_keeps_short_text() -> None:
    assert bounded("short", 10) == "short"
    cut = bounded("x" * 5000, 100)
    assert len(cut) == 100 and cut.endswith(TRUNCATION_MARKER)


def test_safe_message_redacts_before_cutting() -> None:
    text = "y" * 90 + f" https://u:{SECRET}@h/{'p' * 50}"
    assert SECRET not in safe_message(text, 100)


def test_checkpoint_error_is_redacted_and_bounded() -> None:
    message = f"source https://u:{SECRET}@h/x.csv failed: " + "z" * 10_000
    error = Checkpoint().with_error(message).error
    assert SECRET not in error
    assert len(error) <= MAX_ERROR_CHARS and error.endswith(TRUNCATION_MARKER)
