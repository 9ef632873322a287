"""structlog set-up: console or JSON event dicts on stderr, with secrets dropped on the way."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# Keys that must never reach a log line, whatever a caller binds by mistake.
SECRET_KEYS = frozenset({"password", "passwordprofile", "token", "access_token", "secret",
                         "client_secret", "personal_number", "temporaryaccesspass", "authorization"})


def drop_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in [k for k in event if k.lower() in SECRET_KEYS]:
        event[key] = "[redacted]"
    return event


def scrub(value: Any) -> Any:
    """``value`` with every secret key redacted, however deep (an audit record's before and
    after values: a ``passwordProfile`` inside a user's attributes never reaches the log)."""
    if isinstance(value, dict):
        return {k: "[redacted]" if k.lower() in SECRET_KEYS else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def configure(fmt: str = "console", verbosity: int = 0) -> None:
    # -v info, -vv debug; JSON is for machines (a pipeline's log): its info events come unasked.
    level = logging.WARNING - 10 * min(verbosity + (fmt == "json"), 2)
    renderer: Any = (structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
