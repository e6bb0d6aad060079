import pickle

import pytest
from openapi import validate

from noa import errors
from noa.errors import ALL_ERRORS, NoaError, error_for_upstream_status


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_every_error_round_trips_through_pickle(cls: type[NoaError]) -> None:
    original = cls("boom", param="messages", code="c", retry_after=3.0, provider="p")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert (copy.message, copy.param, copy.code, copy.retry_after, copy.provider) == (
        "boom",
        "messages",
        "c",
        3.0,
        "p",
    )
    assert copy.status_code == cls.status_code


@pytest.mark.parametrize("cls", ALL_ERRORS)
def test_error_bodies_are_openai_shaped(cls: type[NoaError]) -> None:
    body = cls("boom").to_dict("cid-1")
    validate("ErrorResponse", body)
    assert body["error"]["correlation_id"] == "cid-1"
    assert body["error"]["category"] in ("client", "external", "server")


def test_retry_after_header_rounds_up() -> None:
    assert errors.RateLimitError("x", retry_after=1.2).headers() == {"retry-after": "2"}
    assert errors.RateLimitError("x").headers() == {}


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, errors.InvalidRequestError, False),
        (422, errors.InvalidRequestError, False),
        (401, errors.UpstreamAuthError, False),
        (404, errors.NotFoundError, False),
        (413, errors.PayloadTooLargeError, False),
        (429, errors.UpstreamRateLimitError, True),
        (500, errors.UpstreamError, True),
        (503, errors.UpstreamError, True),
        (504, errors.UpstreamTimeoutError, True),
    ],
)
def test_upstream_statuses_map_to_one_table(status: int, cls: type, retryable: bool) -> None:
    error = error_for_upstream_status(status, "m", provider="p")
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.provider == "p"


def test_retry_after_parsing_and_upstream_messages() -> None:
    assert errors.parse_retry_after("7") == 7.0
    assert errors.parse_retry_after("0.5") == 0.5
    assert errors.parse_retry_after(None) is None
    assert errors.parse_retry_after("soon") is None
    later = errors.parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT")
    assert later is not None and later > 0
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert errors.upstream_message({"error": {"message": "m"}}, "f") == "m"
    assert errors.upstream_message({"type": "error", "message": "a"}, "f") == "a"
    assert errors.upstream_message("oops", "f") == "f"
