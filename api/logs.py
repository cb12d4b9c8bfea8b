"""JSON structured logs, each line carrying the request id of the request it belongs to."""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


def _head(time: datetime, level: str, logger: str, message: str, pid: int | None, rid: str | None) -> dict[str, Any]:
    """The fields every JSON line starts with, in this order (orjson writes ``time`` as
    ``isoformat()`` does)."""
    entry: dict[str, Any] = {"time": time, "level": level, "logger": logger, "message": message}
    entry["pid"] = pid  # which serving process (api.workers > 1)
    if rid is not None:
        entry["request_id"] = rid
    return entry


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _head(
            datetime.fromtimestamp(record.created, UTC),
            record.levelname.lower(),
            record.name,
            record.getMessage(),
            record.process,
            request_id.get(),
        )
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        # orjson: a line is written for every request, so the JSON serialiser sits on the hot path of
        # every search (docs/architecture.md#the-request-log).
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class JsonLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `dss` processes log through: JSON lines on standard error."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())


class RequestLog:
    """One log line per HTTP request. Where `dss` set up the logging (its JSON handler alone on
    the root logger), the line is made with orjson and written straight to that handler's
    stream, the same fields as ``JsonFormatter`` gives: the logging module's record, formatter
    and handler would be a large share of the event loop's work for a repeated search
    (docs/architecture.md#the-request-log). Anywhere else (an application embedding the app,
    tests) it is an ordinary log record, so that the handlers, filters and levels configured
    there apply."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, rid: str, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handlers = logging.root.handlers
        handler = handlers[0] if len(handlers) == 1 else None
        if type(handler) is not JsonLogHandler or not self.logger.propagate or self.logger.handlers:
            self.logger.info("request", extra=fields)
            return
        entry = {**_head(datetime.now(UTC), "info", self.logger.name, "request", os.getpid(), rid), **fields}
        line = orjson.dumps(entry, default=str).decode() + handler.terminator
        with handler.lock:  # type: ignore[union-attr]  # whole lines, never interleaved with the handler's
            handler.stream.write(line)
            handler.stream.flush()


def configure_json_logging(level: int = logging.INFO) -> None:
    handler = JsonLogHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # we log requests ourselves
