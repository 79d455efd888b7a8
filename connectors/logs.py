"""Structured logs: one JSON object per line on stderr.

Every line has ``ts``, ``level``, ``logger`` and ``msg``; pass more fields with ``extra=`` (for
example ``stage``, ``mac``, ``reason``), which become top-level keys::

    log = logging.getLogger("f2.decode")
    log.warning("dead-lettered", extra={"stage": "decode", "mac": mac, "reason": reason})
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import msgspec

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_encoder = msgspec.json.Encoder()


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON line with its ``extra`` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(line).decode()


def configure_logging(level: str = "INFO") -> None:
    """Send the root logger's records to stderr as JSON lines, at ``level`` (``F2_LOG_LEVEL``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
