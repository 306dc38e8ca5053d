"""What the operator writes or logs never carries a URL's credentials, and error text in
status and events is bounded, whatever a worker or the API server put into it."""

from __future__ import annotations

import logging
import sys

from collectjob_api.checkpoint import Checkpoint
from collectjob_operator.__main__ import RedactingFormatter
from collectjob_operator.decisions import decide
from collectjob_operator.status import ConditionType, Phase

SIGNED = "https://bucket.example/in.csv?X-Amz-Credential=AKID&X-Amz-Signature=5ec12e7"
USERINFO = "https://reader:pa55word@host.example/in.csv"


def test_worker_error_in_status_is_redacted_and_bounded(make_job, world):
    error = f"cannot read {SIGNED} or {USERINFO}: " + "x" * 5000
    job = make_job(status={"phase": "Running"})
    decision = decide(
        job.spec, job.generation, job.status, world(checkpoint=Checkpoint(error=error))
    )
    failed = decision.status.condition(ConditionType.FAILED)
    assert decision.status.phase is Phase.FAILED and failed is not None
    for text in (decision.status.message, failed.message, *(e.message for e in decision.events)):
        assert "5ec12e7" not in text and "AKID" not in text and "pa55word" not in text
        assert len(text) <= 1024
    assert "bucket.example/in.csv" in decision.status.message, "the object is still named"


def test_operator_log_lines_and_tracebacks_are_redacted():
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError(f"GET {SIGNED} failed")
    except RuntimeError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "reading %s", (USERINFO,), exc_info=sys.exc_info()
        )
    line = formatter.format(record)
    assert "5ec12e7" not in line and "pa55word" not in line
    assert "host.example/in.csv" in line and "RuntimeError" in line
