"""Splitting a universe of tickers across N scoring machines.

A ticker belongs to shard K of N (K = 1..N) when a stable hash of its name
(sha256, not Python's per-process hash) falls there, so every machine agrees
without talking to the others, and N shards together cover every ticker once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import ForecasterError


@dataclass(frozen=True)
class Shard:
    k: int
    n: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            k, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ForecasterError(f"--shard {text!r}: expected K/N, e.g. 1/3") from None
        if not 1 <= k <= n:
            raise ForecasterError(f"--shard {text!r}: K must be between 1 and N")
        return cls(k, n)

    def __contains__(self, ticker: str) -> bool:
        return int.from_bytes(hashlib.sha256(ticker.encode()).digest()[:8], "big") % self.n == self.k - 1

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"
