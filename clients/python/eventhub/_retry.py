"""Exponential backoff for calls that fail with UNAVAILABLE."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed with UNAVAILABLE.

    The n-th retry waits a random time up to
    ``min(max_backoff, initial_backoff * multiplier ** n)`` seconds (full
    jitter). ``max_attempts`` counts the first try; 1 disables retries, None
    retries without end. A stream that makes progress starts counting again.
    The defaults (the client's) give up after at most about 11 seconds;
    :data:`RETRY_FOREVER` (the :class:`~eventhub.Consumer`'s) never does.
    """

    max_attempts: int | None = 8
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        try:
            ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**retry)
        except OverflowError:  # retrying without end goes that far
            ceiling = self.max_backoff
        return random.uniform(0, ceiling)

    def allows_retry(self, attempt: int) -> bool:
        """Whether a call that failed on (0-based) ``attempt`` may be tried again."""
        return self.max_attempts is None or attempt + 1 < self.max_attempts

    def should_retry(self, error: grpc.RpcError, attempt: int) -> bool:
        """Whether a call that failed with ``error`` on (0-based) ``attempt`` may be tried again."""
        return error.code() == grpc.StatusCode.UNAVAILABLE and self.allows_retry(attempt)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)
RETRY_FOREVER = RetryPolicy(max_attempts=None)
"""Retries until the call succeeds, waiting at most 5 seconds between tries:
what a Consumer does by default, so that it outlives restarts of the hub."""
