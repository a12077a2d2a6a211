"""Logging of every Flashwire process, set up in one place: text lines or JSON lines.

`FLASHWIRE_LOG_FORMAT` (Settings.log_format) chooses:

- `text` (the default): `2026-01-05 14:03:07,120 service INFO message`, as an operator reads
  a terminal;
- `json`: one JSON object a line, for a log pipeline: `{"time": "2026-01-05T14:03:07.120+00:00",
  "level": "INFO", "logger": "flashwire.service.connection_log", "process": "service",
  "message": "...", ...}`, plus every field a record was given with `extra=` as a key of its own
  (the reader connection line's `client`, `protocol`, `duration_s`, `close_code` ...), and
  `exc_info` (the traceback, as text) when there is one.

The JSON form is a `logging.Formatter` subclass over orjson (already a dependency), not a
logging library: the standard library already does the rest (handlers, levels, uvicorn's and
arq's own loggers all reach the root handler), and the formatter is twenty lines.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s {process} %(levelname)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from `extra=`, except uvicorn's
# `color_message` (the message again, with terminal colour codes).
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC, ms), level, logger, process, message,
    the record's `extra` fields, and exc_info / stack_info as text when present."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": self._process,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in document:
                document[key] = value
        if record.exc_info:
            document["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an `extra` value orjson does not know is logged as its text, never lost.
        return orjson.dumps(document, default=str).decode()


def configure_logging(process: str, log_format: str = "text", *, level: int = logging.INFO) -> None:
    """Send every logger's records (ours, uvicorn's, arq's) to stderr in `log_format`.

    `process` names the kind of process in each line ("service", "worker"). Replaces any
    handler set up before (logging.basicConfig(force=True)).
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    elif log_format == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(process=process)))
    else:
        raise ValueError(f"log format must be 'text' or 'json', got {log_format!r}")
    logging.basicConfig(level=level, handlers=[handler], force=True)
