"""Request counts and latencies in Prometheus' text format, kept by hand: a few counters and
one histogram do not need a client library. Each worker counts its own requests."""

from __future__ import annotations

import threading
from collections import Counter

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()           # (method, route, status) -> n
        self.buckets: Counter = Counter()            # (method, route, le) -> n
        self.sums: Counter = Counter()               # (method, route) -> seconds
        self.counts: Counter = Counter()             # (method, route) -> n

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            self.sums[(method, route)] += seconds
            self.counts[(method, route)] += 1
            for le in BUCKETS:
                if seconds <= le:
                    self.buckets[(method, route, str(le))] += 1

    def render(self, gauges: dict[str, float]) -> str:
        lines = ["# HELP ragloop_requests_total HTTP requests by method, route and status.",
                 "# TYPE ragloop_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'ragloop_requests_total{{method="{method}",route="{route}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP ragloop_request_seconds Request latency.",
                      "# TYPE ragloop_request_seconds histogram"]
            for (method, route), n in sorted(self.counts.items()):
                labels = f'method="{method}",route="{route}"'
                for le in BUCKETS:
                    lines.append(f'ragloop_request_seconds_bucket{{{labels},le="{le}"}} '
                                 f'{self.buckets[(method, route, str(le))]}')
                lines.append(f'ragloop_request_seconds_bucket{{{labels},le="+Inf"}} {n}')
                lines.append(f"ragloop_request_seconds_sum{{{labels}}} "
                             f"{self.sums[(method, route)]:.6f}")
                lines.append(f"ragloop_request_seconds_count{{{labels}}} {n}")
        for name, value in gauges.items():
            lines += [f"# TYPE ragloop_{name} gauge", f"ragloop_{name} {value}"]
        return "\n".join(lines) + "\n"
