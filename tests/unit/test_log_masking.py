"""Masking at the root: once NOA's logging is configured, every record of the process is masked,
whatever logger it comes from (uvicorn's, Ray Serve's, the SDKs') and whatever handler writes it,
extra fields that are dicts or lists included."""

from __future__ import annotations

import io
import logging
from collections import namedtuple
from collections.abc import Iterator

import orjson
import pytest
from uvicorn.logging import AccessFormatter

from noa.observability.logs import JsonFormatter, configure_logging

EMAIL = "jane.doe@example.com"
SECRET = "sk-proj-LeakedUpstreamKey0123456789"
CARD = "4111 1111 1111 1111"


def _all_handlers() -> list[logging.Handler]:
    handlers = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    return handlers


@pytest.fixture
def restored() -> Iterator[list[logging.Logger]]:
    """Puts the process's logging back as it was: the record factory, the filters, the ``noa``
    logger, and the loggers a test lists (their handlers removed, propagation restored)."""
    factory = logging.getLogRecordFactory()
    noa = logging.getLogger("noa")
    before = (list(noa.handlers), noa.level, noa.propagate)
    touched: list[logging.Logger] = []
    yield touched
    logging.setLogRecordFactory(factory)
    for handler in _all_handlers():
        for f in [f for f in handler.filters if type(f).__name__ == "MaskingFilter"]:
            handler.removeFilter(f)
    noa.handlers[:] = before[0]
    noa.setLevel(before[1])
    noa.propagate = before[2]
    for logger in touched:
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def own_handler(
    logger: logging.Logger, formatter: logging.Formatter, touched: list[logging.Logger]
) -> io.StringIO:
    """A handler of the logger's own, not propagating to the root (as uvicorn and Serve do)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    touched.append(logger)
    return stream


def test_records_of_every_library_are_masked(restored: list[logging.Logger]) -> None:
    access = own_handler(
        logging.getLogger("uvicorn.access"),
        AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False),
        restored,
    )
    serve = own_handler(
        logging.getLogger("ray.serve"), logging.Formatter("%(levelname)s %(message)s"), restored
    )
    root = logging.getLogger()
    lines = io.StringIO()
    as_json = logging.StreamHandler(lines)
    as_json.setFormatter(JsonFormatter())
    plain = io.StringIO()
    as_text = logging.StreamHandler(plain)
    as_text.setFormatter(logging.Formatter("%(name)s %(message)s %(payload)s"))
    for handler in (as_json, as_text):
        root.addHandler(handler)
    for name in ("openai", "httpx"):
        logging.getLogger(name).setLevel(logging.INFO)
        restored.append(logging.getLogger(name))
    try:
        configure_logging()  # handlers above were configured first, as in a Serve replica
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/v1/x?to={EMAIL}", "1.1", 200
        )
        serve_logger = logging.getLogger("ray.serve")
        serve_logger.warning("replica saw %s", f"Authorization: Bearer {SECRET}")
        try:
            raise ValueError(f"upstream refused {EMAIL}")
        except ValueError:
            serve_logger.exception("call failed")
        logging.getLogger("openai").info(
            "request options: %s",
            {"headers": {"Authorization": f"Bearer {SECRET}"}},
            extra={"payload": {"email": EMAIL, "cards": [CARD], "n": 3}},
        )
        logging.getLogger("httpx").info(
            f"HTTP Request: POST https://api.example.com/?to={EMAIL}", extra={"payload": [EMAIL]}
        )
    finally:
        root.removeHandler(as_json)
        root.removeHandler(as_text)
    written = access.getvalue() + serve.getvalue() + lines.getvalue() + plain.getvalue()
    assert EMAIL not in written and SECRET not in written and CARD not in written
    assert access.getvalue().strip() == '127.0.0.1:5000 - "GET /v1/x?to=[email] HTTP/1.1" 200 OK'
    assert "Bearer [token]" in serve.getvalue()
    assert "ValueError: upstream refused [email]" in serve.getvalue()  # the traceback too
    openai, httpx = (orjson.loads(line) for line in lines.getvalue().splitlines())
    assert openai["message"] == "request options: {'headers': {'Authorization': 'Bearer [token]'}}"
    assert openai["payload"] == {"email": "[email]", "cards": ["[card]"], "n": 3}
    assert httpx["message"] == "HTTP Request: POST https://api.example.com/?to=[email]"
    assert httpx["payload"] == ["[email]"]
    assert "openai request options" in plain.getvalue() and "'email': '[email]'" in plain.getvalue()


def test_a_handler_configured_later_still_gets_masked_text(restored: list[logging.Logger]) -> None:
    configure_logging()
    late = logging.getLogger("late.library")
    stream = own_handler(late, logging.Formatter("%(message)s|%(detail)s"), restored)
    late.info("user %s", EMAIL, extra={"detail": "-"})
    assert stream.getvalue() == "user [email]|-\n"  # the factory masked the text
    configure_logging()  # a second call reaches the handlers configured since
    late.info("again", extra={"detail": {"to": EMAIL}})
    assert stream.getvalue().splitlines()[1] == "again|{'to': '[email]'}"


def test_masked_values_keep_their_shape() -> None:
    from noa.observability.logs import MaskingFilter
    from noa.observability.pii import mask_value

    Pair = namedtuple("Pair", "a b")

    class Shown:
        def __str__(self) -> str:
            return f"shown {EMAIL}"

    assert mask_value({"a": [EMAIL, (1, 2.5, None, True)], "b": {EMAIL}}) == {
        "a": ["[email]", (1, 2.5, None, True)],
        "b": {"[email]"},
    }
    assert mask_value(Pair(EMAIL, 1)) == "Pair(a='[email]', b=1)"  # masked as its text
    assert mask_value(Shown()) == "shown [email]"
    error = ValueError("nothing here")
    assert mask_value(error) is error  # nothing to mask: kept as it is
    record = logging.LogRecord("x", logging.INFO, "f", 1, "%d tokens, %s", (12, EMAIL), None)
    MaskingFilter().filter(record)
    assert record.getMessage() == "12 tokens, [email]"  # %d still gets a number
