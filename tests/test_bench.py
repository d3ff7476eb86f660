"""``python -m recipes bench --quick`` runs and prints its tables (the figures are not asserted:
timing belongs in the benchmark, never in a test); the targets' verdicts follow their rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recipes.bench import cpu
from recipes.bench.targets import verdict


def test_the_benchmark_prints_its_tables_and_targets_and_writes_json(tmp_path, pg_server_url):
    out = tmp_path / "results.json"
    pg = pg_server_url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-m", "recipes", "bench", "--quick",
         "--suites", "inline savepoint recipe,recipes db_session",  # and the no-database ones
         "--db-url", "sqlite+aiosqlite://", "--db-url", pg, "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ["inline savepoint (a)", "recipes db_session (b)", "truncate (c)", "drop + create (d)",
                 "ms/test above no-db", "x inline", "spread", "minimum of 2 interleaved runs",
                 "server: postgresql", "== sqlite", "== postgresql", "where the time goes",
                 "asyncpg connect + close(), defaults (ssl=prefer)", "targets",
                 "at most 1.10 times the inline create_savepoint recipe",
                 "function loop: at most 5 ms per test", "pytest-xdist", "-n 2",
                 "pytest -n 2 at least 1.3 times as fast as -n 0", "CPU s: pytest",
                 *(["CPU: -n 0", f"on {os.cpu_count()} cores at best"] if os.path.exists("/proc/stat") else [])]:
        assert line in done.stdout, done.stdout
    report = json.loads(out.read_text())
    assert set(report["machine"]["databases"]) == {"sqlite", "postgresql"}
    assert set(report["backends"]) == {"sqlite", "postgresql"}
    assert (report["tests"], report["runs"]) == (4, 2)
    strategies = report["backends"]["postgresql"]["strategies"]
    assert [s["ratio"] for s in strategies if s["strategy"] == "inline savepoint (a)"] == [1.0]
    assert all(s["median_ms"] > 0 for s in strategies)
    suites = {(s["suite"], s["loop"]): s for s in report["backends"]["postgresql"]["suites"]}
    assert suites[("inline savepoint recipe", "session")]["spread_ms"] is not None
    assert suites[("no database", "session")]["per_test_ms"] is None
    assert ("truncate", "session") not in suites  # --suites leaves it out
    for backend in ("sqlite", "postgresql"):
        runs = report["backends"][backend]["xdist"]
        assert [w["workers"] for w in runs] == [0, 1, 2]
        # where the time went: every pytest process wrote its CPU time, the workers too
        linux = os.path.exists("/proc/stat")  # the machine's busy time: Linux only
        assert all(w["pytest_cpu_s"] > 0 and (w["rest_cpu_s"] is not None) == linux for w in runs)
        assert [w["workers_cpu_s"] > 0 for w in runs] == [False, True, True]
        targets = report["backends"][backend]["targets"]
        assert targets and all(t["verdict"] == verdict(t["value"], t["limit"], t["noise"]) for t in targets)


@pytest.mark.parametrize(("value", "limit", "noise", "expected"), [
    (1.0, 2.0, 0.5, "met"),
    (3.0, 2.0, 0.5, "not met"),
    (1.8, 2.0, 0.5, "within noise (met on this run)"),
    (2.2, 2.0, 0.5, "within noise (not met on this run)"),
    (2.2, 2.0, None, "not met"),
])
def test_a_target_is_met_or_not_only_beyond_the_noise(value, limit, noise, expected):
    assert verdict(value, limit, noise) == expected


def test_other_work_is_the_share_of_the_cores_busy_while_the_caller_sleeps(monkeypatch):
    readings = iter([100.0, 101.5])  # busy CPU seconds of the whole machine, before and after
    monkeypatch.setattr(cpu, "machine_busy", lambda: next(readings))
    monkeypatch.setattr(cpu.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 2)
    assert cpu.other_work(1.0) == pytest.approx(0.75)  # 1.5 core-seconds in 1 s of 2 cores


def test_other_work_sees_a_process_that_keeps_a_core_busy():
    if cpu.machine_busy() is None:
        pytest.fail("recipes.bench.cpu reads Linux's /proc/stat: this suite runs on Linux")
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 10\nwhile time.time() < end: pass"])
    try:
        share = cpu.other_work(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    # at least the spinner's core, whatever else runs (on a busy machine the share only grows)
    assert share is not None and share >= 0.8 / (os.cpu_count() or 1)

