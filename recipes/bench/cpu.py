"""Where a pytest command's CPU time goes: a pytest plugin for the benchmark's own runs.

``python -m pytest -p recipes.bench.cpu`` with ``RECIPES_BENCH_CPU`` naming a folder: at the
very end of the run (after every other plugin's ``pytest_unconfigure``: the test databases are
dropped by then) each pytest process writes the CPU seconds it used (user + system) to a file
in that folder named by its part: ``pytest`` for the process started (the xdist controller,
or the only process under ``-n 0``), the worker's id (``gw0``) for a worker. xdist starts its
workers with the same arguments, so they load this plugin too. Without the variable it does
nothing.

:func:`machine_busy` is the other half: the CPU seconds the whole machine spent (Linux
``/proc/stat``), so that what is left after the pytest processes' share is the database
server's, and anything else that ran meanwhile. :func:`other_work` says how much of that
"anything else" there is: how busy the machine's cores are while this process does nothing.
On a machine that other work keeps busy (a CI runner running other jobs), the rest is mostly
that work, and wall times measure the contention as much as what they set out to measure.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

__all__ = ["ENV", "machine_busy", "other_work", "read_cpu"]

ENV = "RECIPES_BENCH_CPU"


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    folder = os.environ.get(ENV)
    if folder:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        part = os.environ.get("PYTEST_XDIST_WORKER") or "pytest"
        Path(folder, f"{part}-{os.getpid()}").write_text(f"{usage.ru_utime + usage.ru_stime:.4f}")


def read_cpu(folder: Path) -> dict[str, float]:
    """CPU seconds by part (``pytest``, ``gw0``, ...) from what the processes wrote to ``folder``."""
    return {path.name.rsplit("-", 1)[0]: float(path.read_text()) for path in folder.iterdir()}


def machine_busy() -> float | None:
    """CPU seconds every core of the machine has spent busy since boot; None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:3]) + sum(fields[5:7])  # user, nice, system, irq, softirq: not idle,
    return busy / os.sysconf("SC_CLK_TCK")  # iowait, nor steal (a VM's host running others)


def other_work(seconds: float = 1.0) -> float | None:
    """The share of the machine's cores kept busy by other processes over ``seconds`` while this
    one sleeps: 0.0 for an idle machine, 1.0 for every core busy; None off Linux. Take it before
    and after a measurement: it samples a moment, and other work comes and goes."""
    before = machine_busy()
    time.sleep(seconds)
    after = machine_busy()
    if before is None or after is None:
        return None
    return min(1.0, max(0.0, (after - before) / (seconds * (os.cpu_count() or 1))))
