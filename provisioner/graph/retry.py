"""Retries in one layer: tenacity, honouring Retry-After. msgraph's own RetryHandler is left
out of the middleware (see client.py) so that retries never multiply."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from ..errors import NotReplicatedError, ThrottledError, TransportError

T = TypeVar("T")
log = structlog.get_logger("provisioner.graph")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 8
    initial: float = 0.5   # seconds, for backoff without Retry-After
    # Cap on any single wait. Graph's Retry-After is honoured up to Entra's whole write window
    # (150 s): waiting less and asking again while throttled only extends the throttling.
    maximum: float = 150.0

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            return min(exc.retry_after, self.maximum)
        # Exponential backoff with full jitter (no Retry-After: a transport failure, a 5xx).
        ceiling = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def run(self, attempt: Callable[[], Awaitable[T]],
                  on_retry: Callable[[BaseException, float], None]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            if exc is not None:
                on_retry(exc, wait)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((ThrottledError, TransportError, NotReplicatedError)),
            wait=self.wait,
            stop=stop_after_attempt(self.attempts),
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)
