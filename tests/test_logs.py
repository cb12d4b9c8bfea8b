"""The JSON log lines of `dss` processes, and the request log beside them."""

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from api.logs import RequestLog, configure_json_logging, request_id

FIELDS = {"method": "GET", "route": "/search", "status": 200, "ms": 1.25}


@contextmanager
def dss_logging() -> Iterator[io.StringIO]:
    """`dss`'s own log set-up (its handler alone on the root logger) writing to a buffer, the
    test's set-up restored after. Entered in the test itself: pytest adds its capture handlers
    to the root logger when the test starts."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_json_logging()
    stream = io.StringIO()
    root.handlers[0].setStream(stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved


def test_request_lines_written_directly_match_the_formatters() -> None:
    log = logging.getLogger("api")
    records: list[logging.LogRecord] = []
    token = request_id.set("rid-1")
    with dss_logging() as stream:
        logging.getLogger().handlers[0].addFilter(lambda record: records.append(record) or True)
        log.info("request", extra=FIELDS)  # through the logging module and JsonFormatter
        RequestLog(log).write("rid-1", FIELDS)  # straight to the handler's stream
    request_id.reset(token)
    assert len(records) == 1  # the second line made no log record
    formatted, direct = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert list(direct) == list(formatted)  # the same fields, in the same order
    assert {k: v for k, v in direct.items() if k != "time"} == {k: v for k, v in formatted.items() if k != "time"}
    assert direct["request_id"] == "rid-1" and direct["route"] == "/search"
    assert direct["time"].endswith("+00:00") and len(direct["time"]) == len(formatted["time"])


def test_request_lines_respect_the_level() -> None:
    log = logging.getLogger("api")
    log.setLevel(logging.WARNING)
    try:
        with dss_logging() as stream:
            RequestLog(log).write("rid-2", FIELDS)
    finally:
        log.setLevel(logging.NOTSET)
    assert stream.getvalue() == ""


def test_elsewhere_request_lines_are_ordinary_records(caplog: pytest.LogCaptureFixture) -> None:
    # Not `dss`'s set-up (here: pytest's capture handler): the configured handlers see the line.
    with caplog.at_level(logging.INFO, logger="api"):
        RequestLog(logging.getLogger("api")).write("rid-3", FIELDS)
    [record] = [r for r in caplog.records if r.name == "api"]
    assert record.getMessage() == "request" and record.status == 200 and record.route == "/search"
