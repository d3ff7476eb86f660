"""The speed targets, judged against one run's figures, with the run's own noise.

Each target wants a figure at most a limit (``value <= limit``). The verdict takes the spread
of the figures into account (:mod:`recipes.bench.suites`, :mod:`recipes.bench.strategies`: how
far each figure moved between two halves of its runs), added up over the figures involved:

- **met**: the value is below the limit by more than the noise;
- **not met**: above it by more than the noise;
- **within noise**: closer to the limit than the noise, so this run cannot tell; the verdict
  says on which side this run's figures fell.

The targets:

- in process (the workbook's own): ``db_session`` at most 1.25 times the inline recipe, and
  dropping and creating the schema at least 5 times ``db_session``;
- through pytest, 1,000 tests per suite: ``db_session`` on a session loop at most 1.10 times the
  inline ``create_savepoint`` recipe, on every database; on a function loop, at most 5 ms per
  test on PostgreSQL; and ahead of pytest-sqla on every database and loop;
- pytest-xdist (:mod:`recipes.bench.xdist`): ``-n 2`` at least 1.3 times as fast as ``-n 0``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .strategies import Measurement
from .suites import SuiteResult
from .xdist import WorkersResult

__all__ = ["Target", "targets", "verdict"]


@dataclass
class Target:
    backend: str
    target: str  # what is wanted, in words
    figure: str  # this run's figures, in words
    value: float
    limit: float
    noise: float | None
    verdict: str


def verdict(value: float, limit: float, noise: float | None) -> str:
    """Whether ``value <= limit``, and whether the run's noise lets it say so."""
    noise = noise or 0.0
    if value + noise <= limit:
        return "met"
    if value - noise > limit:
        return "not met"
    return f"within noise ({'met' if value <= limit else 'not met'} on this run)"


def _noise(*spreads: float | None) -> float | None:
    known = [s for s in spreads if s is not None]
    return sum(known) if known else None


def _pm(noise: float | None) -> str:
    return "" if noise is None else f" ± {noise:.2f}"


def _ceiling(serial: WorkersResult, two: WorkersResult, cores: int) -> str:
    """What the CPU of -n 2 allows: its CPU seconds spread evenly over every core, without a
    moment idle, is the shortest its wall time can be; -n 0's wall over that, the best speedup."""
    spent = [two.pytest_cpu_s, two.workers_cpu_s, two.rest_cpu_s]
    if None in spent or serial.pytest_cpu_s is None or serial.rest_cpu_s is None or not cores:
        return ""
    total, alone = sum(spent), serial.pytest_cpu_s + serial.rest_cpu_s  # type: ignore[arg-type, operator]
    rest = "rest of the machine" if two.backend == "sqlite" else "server and rest"
    return (f"; CPU: -n 0 {alone:.2f} s, -n 2 {total:.2f} s (controller {two.pytest_cpu_s:.2f}, workers "
            f"{two.workers_cpu_s:.2f}, {rest} {two.rest_cpu_s:.2f}): on {cores} cores at best "
            f"{total / cores:.2f} s, {serial.wall_s / (total / cores):.2f} times")


def targets(backend: str, strategies: list[Measurement], suites: list[SuiteResult],
            workers: list[WorkersResult] = (), cores: int | None = None) -> list[Target]:  # type: ignore[assignment]
    """Every target the figures of one database can judge (``cores``: the machine's, by default
    this one's)."""
    cores = cores or os.cpu_count() or 0
    found: list[Target] = []

    def add(target: str, figure: str, value: float, limit: float, noise: float | None) -> None:
        found.append(Target(backend, target, figure, value, limit, noise, verdict(value, limit, noise)))

    ms = {m.strategy[-2]: m for m in strategies}  # "inline savepoint (a)" -> "a"
    if {"a", "b"} <= set(ms):
        a, b = ms["a"], ms["b"]
        noise = _noise(b.spread_ms, a.spread_ms and 1.25 * a.spread_ms)
        add("db_session (b) at most 1.25 times the inline recipe (a), in process",
            f"{b.median_ms:.2f} ms, limit {1.25 * a.median_ms:.2f}{_pm(noise)} "
            f"({b.median_ms / a.median_ms:.2f} times)",
            b.median_ms, 1.25 * a.median_ms, noise)
    if {"b", "d"} <= set(ms):
        b, d = ms["b"], ms["d"]
        noise = _noise(b.spread_ms and 5 * b.spread_ms, d.spread_ms)
        add("drop + create (d) at least 5 times db_session (b), in process",
            f"5 x {b.median_ms:.2f} ms, against {d.median_ms:.2f}{_pm(noise)} "
            f"({d.median_ms / b.median_ms:.2f} times)",
            5 * b.median_ms, d.median_ms, noise)

    suite = {(s.suite, s.loop): s for s in suites if s.per_test_ms is not None}
    ours = {loop: suite.get(("recipes db_session", loop)) for loop in ("session", "function")}
    inline = suite.get(("inline savepoint recipe", "session"))
    mine = ours["session"]
    if mine is not None and inline is not None:
        limit = 1.10 * inline.per_test_ms  # type: ignore[operator]
        noise = _noise(mine.spread_ms, inline.spread_ms and 1.10 * inline.spread_ms)
        ratio = f" ({mine.per_test_ms / inline.per_test_ms:.2f} times)" if inline.per_test_ms > 0 else ""  # type: ignore[operator]
        add("db_session, session loop: at most 1.10 times the inline create_savepoint recipe, pytest",
            f"{mine.per_test_ms:.2f} ms, limit {limit:.2f}{_pm(noise)}{ratio}",
            mine.per_test_ms, limit, noise)  # type: ignore[arg-type]
    mine = ours["function"]
    if mine is not None and backend == "postgresql":
        add("db_session, function loop: at most 5 ms per test, pytest",
            f"{mine.per_test_ms:.2f}{_pm(mine.spread_ms)} ms",
            mine.per_test_ms, 5.0, mine.spread_ms)  # type: ignore[arg-type]
    for loop, mine in ours.items():
        peer = suite.get(("pytest-sqla", loop))
        if mine is not None and peer is not None:
            noise = _noise(mine.spread_ms, peer.spread_ms)
            add(f"db_session ahead of pytest-sqla, {loop} loop, pytest",
                f"{mine.per_test_ms:.2f} ms, pytest-sqla {peer.per_test_ms:.2f}{_pm(noise)}",
                mine.per_test_ms, peer.per_test_ms, noise)  # type: ignore[arg-type]
    by_count = {w.workers: w for w in workers}
    if 0 in by_count and 2 in by_count:  # wants serial / two >= 1.3, i.e. 1.3 * two <= serial
        serial, two = by_count[0], by_count[2]
        noise = _noise(two.spread_s and 1.3 * two.spread_s, serial.spread_s)
        add("pytest -n 2 at least 1.3 times as fast as -n 0, 1,000 database tests",
            f"-n 0 {serial.wall_s:.2f} s, -n 2 {two.wall_s:.2f} s{_pm(noise)} "
            f"({serial.wall_s / two.wall_s:.2f} times as fast){_ceiling(serial, two, cores)}",
            1.3 * two.wall_s, serial.wall_s, noise)
    return found
