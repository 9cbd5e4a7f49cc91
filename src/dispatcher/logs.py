"""structlog setup: JSON lines for machines, pretty console on a terminal. Logs go
to stderr, so a command's stdout holds only its output (`--json | jq` works)."""

from __future__ import annotations

import logging
import sys

import structlog

from dispatcher.config import LogConfig


def configure_logging(cfg: LogConfig) -> None:
    level = logging.getLevelNamesMapping()[cfg.level.upper()]
    use_console = cfg.format == "console" or (cfg.format == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (aiohttp access logs are off).
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)


class _ProtocolErrors(logging.Handler):
    """aiohttp's server logs a request it cannot parse (a header over 8 KB, a bad
    request line) as a multi-line traceback whose text can quote the request, an
    API key included. Turn each into one structured line that names the error's
    class only: nothing of the request's headers or body."""

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        structlog.get_logger("dispatcher.http").warning(
            "http.unparsable_request", error=type(exc).__name__ if exc else record.levelname,
            status=getattr(exc, "code", None), remote=str(remote) if remote else None)


def protocol_error_logger() -> logging.Logger:
    """The logger to give aiohttp's request handler (`AppRunner(..., logger=...)`)."""
    logger = logging.getLogger("dispatcher.http.protocol")
    if not logger.handlers:
        logger.addHandler(_ProtocolErrors())
        logger.propagate = False
    return logger
