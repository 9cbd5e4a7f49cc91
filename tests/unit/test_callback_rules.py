"""The callback decision rule: 200/201 and exactly `ok` or `deny` after removing
surrounding ASCII whitespace; anything else is not a decision (and is retried)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatcher.engine.outcome import classify_answer
from dispatcher.model import FailureReason
from dispatcher.retry import PRESETS
from dispatcher.transport import Exchange
from dispatcher.transport.classify import decision_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("status", "body", "decision"), [
    (200, "ok", "ok"),
    (201, "deny", "deny"),
    (200, " \t\r\n\x0b\x0cok \n", "ok"),
    (201, "\ndeny\n", "deny"),
    (200, "OK", None),
    (200, "Ok", None),
    (200, "DENY", None),
    (200, '"ok"', None),
    (200, "yes", None),
    (200, '{"result": "ok"}', None),
    (200, "", None),
    (200, "o k", None),
    (200, "ok ok", None),
    (200, "\u00a0ok", None),  # not ASCII whitespace
    (200, "\u3000deny", None),
    (202, "ok", None),
    (204, "", None),
    (500, "ok", None),
    (302, "ok", None),
])
def test_decision_rule(status: int, body: str, decision: str | None) -> None:
    assert decision_of(status, body) == decision


def _result(status: int | None, body: str | None,
            failure: FailureReason | None = None) -> Exchange:
    return Exchange(NOW, NOW, 1.0, {}, status=status, response_body=body, failure=failure)


def test_classify_marks_what_is_not_a_decision() -> None:
    ok = _result(200, "ok")
    assert classify_answer(ok) == "ok" and ok.failure is None
    # A profile narrowing success to [200] must not turn a 201 `deny` into a failure.
    deny = _result(201, "deny", FailureReason.HTTP_STATUS)
    assert classify_answer(deny) == "deny" and deny.failure is None
    vague = _result(200, "OK")
    assert classify_answer(vague) is None and vague.failure is FailureReason.NO_DECISION
    accepted = _result(202, "ok")
    assert classify_answer(accepted) is None and accepted.failure is FailureReason.HTTP_STATUS
    error = _result(500, "ok", FailureReason.HTTP_STATUS)
    assert classify_answer(error) is None and error.failure is FailureReason.HTTP_STATUS
    timeout = _result(None, None, FailureReason.TIMEOUT)
    assert classify_answer(timeout) is None and timeout.failure is FailureReason.TIMEOUT


def test_callback_preset_is_30_retries_within_165_seconds() -> None:
    policy = PRESETS["callback"]
    assert policy.retries == 30
    assert sum(policy.delays) == 165.0
    # Even with every one of the 31 attempts taking the 2 s timeout, within 5 minutes.
    assert sum(policy.delays) + 31 * 2 < 300
