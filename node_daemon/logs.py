"""JSON-lines logging: one object per line, to a rotating file in the data dir and stderr."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

# LogRecord attributes that are not ours to print
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _FileHandler(logging.handlers.RotatingFileHandler):
    """A log file on a disk that fills up or turns read-only says so once on stderr,
    not once per line; the node goes on (its replies say what is wrong)."""

    failing = False
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if not self._failed_now:
            self.failing = False  # this line got through: the disk is back

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed_now = True
        if not self.failing:
            self.failing = True
            error = sys.exc_info()[1]
            print(f"tars-node: cannot write {self.baseFilename}: {error}", file=sys.stderr)


def setup_logging(log_dir: Path, level: str = "info", *, stderr: bool = True) -> Path:
    """Configure the ``tars_node`` loggers; returns the log file's path. A log file
    that cannot be opened (a read-only or full disk) leaves stderr only."""
    path = log_dir / "node.log"
    logger = logging.getLogger("tars_node")
    logger.setLevel(level.upper())
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = JsonFormatter()
    problem: OSError | None = None
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = _FileHandler(
            path, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
        )
    except OSError as exc:
        problem = exc
    else:
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    # Without stderr logging (a child of `tars`), errors still go there: its parent
    # shows the last lines when the node fails to start.
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    stream.setLevel(logging.NOTSET if stderr or problem else logging.ERROR)
    logger.addHandler(stream)
    if problem is not None:
        logger.warning("no log file, logging to stderr only", extra={"error": str(problem)})
    return path
