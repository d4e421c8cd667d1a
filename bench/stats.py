"""Latency summaries shared by the benchmarks."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    name: str
    samples: int
    p50_us: float
    p99_us: float
    ops_per_second: float

    def row(self) -> str:
        return (
            f"| {self.name} | {self.samples} | {self.p50_us:.1f} | {self.p99_us:.1f} "
            f"| {f'{self.ops_per_second:,.0f}' if self.ops_per_second else '-'} |"
        )


def summarize(name: str, durations_ns: list[int], ops_per_second: float) -> Latency:
    ordered = sorted(durations_ns)
    p99_index = min(len(ordered) - 1, int(len(ordered) * 0.99))
    return Latency(
        name=name,
        samples=len(ordered),
        p50_us=statistics.median(ordered) / 1000,
        p99_us=ordered[p99_index] / 1000,
        ops_per_second=ops_per_second,
    )


LATENCY_HEADER = "| operation | samples | p50 (µs) | p99 (µs) | ops/s |\n|---|---:|---:|---:|---:|"
