"""A log-spaced histogram: latency percentiles within 2.2 % from constant memory."""

import math
from collections import Counter

__all__ = ["LogHistogram", "rounded"]

_BASE = 2 ** (1 / 32)
_PER_LOG_UNIT = 1 / math.log(_BASE)  # log(value) * this = log base _BASE of value


class LogHistogram:
    """Counts of non-negative values in log-spaced buckets; percentiles within 2.2 % (see the module docstring).

    Bucket ``i`` holds values in ``(BASE**(i-1), BASE**i]``; zero (and below) has a bucket of its own.
    """

    BASE = _BASE
    __slots__ = ("_buckets", "_zeros", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()  # bucket index -> values in it
        self._zeros = 0  # values <= 0
        self.count = 0
        self.total = 0.0  # sum of values, for the mean
        self.min = math.inf
        self.max = -math.inf

    def __repr__(self) -> str:
        return f"LogHistogram(count={self.count}, buckets={len(self._buckets)}, min={self.min}, max={self.max})"

    def add(self, value: float) -> None:
        """Count one value."""
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0:
            self._zeros += 1
        else:
            self._buckets[math.ceil(math.log(value) * _PER_LOG_UNIT)] += 1

    def percentile(self, p: float) -> float | None:
        """The nearest-rank ``p``-th percentile (0 < p <= 100), as its bucket's upper bound; ``None`` if empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = self._zeros
        if seen >= rank:
            return max(self.min, 0.0)
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(max(self.BASE**index, self.min), self.max)
        return self.max

    def summary(self) -> dict[str, float | int | None]:
        """``count``, ``p50``, ``p90``, ``p99``, ``max``, ``mean``."""
        if not self.count:
            return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
        return {
            "count": self.count,
            **{f"p{p}": rounded(self.percentile(p)) for p in (50, 90, 99)},
            "max": rounded(self.max),
            "mean": rounded(self.total / self.count),
        }


def rounded(value: float | None, digits: int = 1) -> float | None:
    """``round``, passing ``None`` through."""
    return None if value is None else round(value, digits)
