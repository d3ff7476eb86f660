"""``python -m recipes bench`` runs and prints its tables (the figures are not asserted: timing
belongs in the benchmark, never in a test)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_benchmark_prints_both_tables_and_writes_json(tmp_path, pg_server_url):
    out = tmp_path / "results.json"
    pg = pg_server_url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-m", "recipes", "bench", "--tests", "3", "--rounds", "3", "--repeat", "1",
         "--db-url", "sqlite+aiosqlite://", "--db-url", pg, "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ["inline savepoint (a)", "recipes db_session (b)", "truncate (c)", "drop + create (d)",
                 "ms/test above no-db", "x inline", "server: postgresql", "== sqlite", "== postgresql"]:
        assert line in done.stdout, done.stdout
    report = json.loads(out.read_text())
    assert set(report["machine"]["databases"]) == {"sqlite", "postgresql"}
    assert set(report["backends"]) == {"sqlite", "postgresql"}
    strategies = report["backends"]["postgresql"]["strategies"]
    assert [s["ratio"] for s in strategies if s["strategy"] == "inline savepoint (a)"] == [1.0]
    assert all(s["median_ms"] > 0 for s in strategies)
