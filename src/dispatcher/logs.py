"""structlog setup: JSON lines for machines, pretty console when stdout is a TTY."""

from __future__ import annotations

import logging
import sys

import structlog

from dispatcher.config import LogConfig


def configure_logging(cfg: LogConfig) -> None:
    level = logging.getLevelNamesMapping()[cfg.level.upper()]
    use_console = cfg.format == "console" or (cfg.format == "auto" and sys.stdout.isatty())
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
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (aiohttp access logs are off).
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)
