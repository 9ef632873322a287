"""Retries in one layer: tenacity, honouring Retry-After. msgraph's own RetryHandler is left
out of the middleware (see client.py) so that retries never multiply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ..errors import ThrottledError, TransportError

T = TypeVar("T")
log = structlog.get_logger("provisioner.graph")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 8
    initial: float = 0.5   # seconds, for backoff without Retry-After
    maximum: float = 60.0  # cap on any single wait, Retry-After included

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            return min(exc.retry_after, self.maximum)
        backoff = wait_exponential_jitter(initial=self.initial, max=self.maximum)
        return float(backoff(state))

    async def run(self, attempt: Callable[[], Awaitable[T]],
                  on_retry: Callable[[BaseException, float], None]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            if exc is not None:
                on_retry(exc, wait)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((ThrottledError, TransportError)),
            wait=self.wait,
            stop=stop_after_attempt(self.attempts),
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)
