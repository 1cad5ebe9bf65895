"""Per-op request counts and latency percentiles over a rolling window. Standard library."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

WINDOW = 1024


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass
class _OpStats:
    count: int = 0
    errors: int = 0
    recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))


class OpMetrics:
    def __init__(self) -> None:
        self._ops: dict[str, _OpStats] = {}

    def record(self, op: str, ms: float, ok: bool) -> None:
        stats = self._ops.setdefault(op, _OpStats())
        stats.count += 1
        stats.errors += 0 if ok else 1
        stats.recent_ms.append(ms)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for op, stats in sorted(self._ops.items()):
            values = sorted(stats.recent_ms)
            out[op] = {
                "count": stats.count,
                "errors": stats.errors,
                "p50_ms": round(percentile(values, 50), 3),
                "p95_ms": round(percentile(values, 95), 3),
                "p99_ms": round(percentile(values, 99), 3),
                "max_ms": round(values[-1], 3) if values else 0.0,
            }
        return out
