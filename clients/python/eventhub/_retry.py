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
    jitter). ``max_attempts`` counts the first try; 1 disables retries. A
    stream that makes progress starts counting again. The defaults give up
    after at most about 11 seconds.
    """

    max_attempts: int = 8
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return random.uniform(0, min(self.max_backoff, self.initial_backoff * self.multiplier**retry))

    def should_retry(self, error: grpc.RpcError, attempt: int) -> bool:
        """Whether a call that failed with ``error`` on (0-based) ``attempt`` may be tried again."""
        return error.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < self.max_attempts


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)
