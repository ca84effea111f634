"""Octopus's rate limit: each API key gets a token bucket of `rate_burst` requests refilled
at `rate_limit` per minute (StandInSettings); a request finding its bucket empty is refused
with 429 and `Retry-After` (seconds), unprocessed, and every answer carries the advisory
`Octopus-RateLimit-*` headers."""

from __future__ import annotations

import math
import threading
import time


class RateLimited(Exception):
    """429: the API key's bucket is empty; headers say when to come back."""

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers


class _TokenBucket:
    """Octopus' rate limiter (a token bucket): `burst` tokens to start with and at most,
    refilled continuously at `per_minute`; every request takes one."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._per_second = per_minute / 60
        self._burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self, now: float) -> tuple[bool, int, float, float]:
        """(allowed, tokens left, seconds until full, seconds until the next token)."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        full_in = (self._burst - self._tokens) / self._per_second
        next_in = max(0.0, 1 - self._tokens) / self._per_second
        return allowed, int(self._tokens), full_in, next_in


class RateLimiter:
    """One bucket per API key; rate 0 turns the limit off."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._rate = per_minute
        self._burst = burst
        self._buckets: dict[bytes, _TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, key: bytes) -> dict[str, str]:
        """Take a token from the key's bucket: the advisory headers, or RateLimited."""
        rate, burst = self._rate, self._burst
        if not rate:
            return {}
        with self._lock:
            bucket = self._buckets.setdefault(key, _TokenBucket(rate, burst))
            allowed, remaining, full_in, retry_in = bucket.take(time.monotonic())
        headers = {
            "Octopus-RateLimit-Policy": f"l={burst};rpm={rate}",
            "Octopus-RateLimit": f"r={remaining};t={math.ceil(full_in)}",
        }
        if allowed:
            return headers
        raise RateLimited(
            "Rate limit policy Authenticated requests exceeded: too many requests; "
            f"retry after {math.ceil(retry_in)} seconds.",
            {**headers, "Retry-After": str(max(1, math.ceil(retry_in)))},
        )
