"""A listener's `result` frame becomes an attempt only through checks like a
receiver's answer gets."""

from __future__ import annotations

import math

import pytest

from dispatcher.config import DeliveryConfig
from dispatcher.model import FailureReason
from dispatcher.relay import MAX_HEADERS, listener_answer

CONFIG = DeliveryConfig(response_body_limit=10)


@pytest.mark.parametrize("status", [10**30, -1, 99, 600, True, 200.0, "200"])
def test_a_status_that_is_not_an_http_status_is_a_protocol_error(status: object) -> None:
    answer = listener_answer({"status": status}, CONFIG)
    assert answer.status is None and answer.reason is FailureReason.PROTOCOL_ERROR


@pytest.mark.parametrize(("status", "reason"), [(200, None), (299, None),
                                                (302, FailureReason.REDIRECT),
                                                (500, FailureReason.HTTP_STATUS)])
def test_a_real_status_is_classified_as_a_receivers(
    status: int, reason: FailureReason | None
) -> None:
    assert listener_answer({"status": status}, CONFIG).reason is reason


def test_no_status_takes_the_listeners_reason_or_a_connect_error() -> None:
    assert listener_answer({"failure_reason": "timeout"}, CONFIG).reason is FailureReason.TIMEOUT
    assert listener_answer({"failure_reason": "x"}, CONFIG).reason is FailureReason.CONNECT_ERROR


@pytest.mark.parametrize("duration", [math.nan, math.inf, -1, 10**20, "5", None, False])
def test_an_odd_duration_is_zero(duration: object) -> None:
    assert listener_answer({"status": 200, "duration_ms": duration}, CONFIG).duration_ms == 0


def test_headers_body_and_error_are_bounded_and_free_of_nul() -> None:
    answer = listener_answer({
        "status": 200, "headers": {f"h{i}\x00": "v\x00" * 10_000 for i in range(500)},
        "body": "b\x00" * 50, "error": "e\x00" * 1000}, CONFIG)
    assert answer.headers is not None and len(answer.headers) == MAX_HEADERS
    assert all("\x00" not in k + v and len(v) <= 8190 for k, v in answer.headers.items())
    assert answer.body == "b\ufffd" * 5
    assert answer.error is not None and len(answer.error) == 500 and "\x00" not in answer.error
