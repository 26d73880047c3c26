"""Structured logs: one JSON object per line, with whatever `extra=` fields a call adds.

Never pass image data, API keys or raw headers as extras: these lines are the
access log and they end up in log storage.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "color_message" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info") -> None:
    """JSON to stderr for our loggers and uvicorn's; uvicorn's access log is replaced by ours."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


class AccessLog:
    """One JSON line per answered request, in the same shape as the other log lines.

    Written without the `logging` machinery (a LogRecord plus a formatter cost
    ~20 µs, more than a whole cached prediction): the line is built with orjson
    and lines are written together once per event-loop turn. Never give it
    image data, keys or raw headers.
    """

    LOGGER = "service.access"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    def record(
        self,
        request_id: str,
        method: str,
        route: str,
        status: int,
        seconds: float,
        client: str,
        protocol: str = "http",
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # the formatted date changes once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "time": f"{self._stamp}.{int((now - second) * 1000):03d}Z",
            "level": "info",
            "logger": self.LOGGER,
            "message": "request",
            "request_id": request_id,
            "protocol": protocol,
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "client": client,
        }
        if not self._lines:
            asyncio.get_running_loop().call_soon(self.flush)
        self._lines.append(orjson.dumps(entry).decode())

    def flush(self) -> None:
        if self._lines:
            stream = self._stream or sys.stderr
            stream.write("\n".join(self._lines) + "\n")
            stream.flush()
            self._lines.clear()
