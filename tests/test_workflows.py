"""The GitHub workflows run what README.md and .ci/run say CI runs.

``.github/workflows/tests.yml`` and ``docs.yml`` are read as data: their triggers, services,
Python matrix and Pages permissions are checked, and every line of README.md's two CI commands
(the blocks after ``<!-- ci: tests -->`` and ``<!-- ci: workbook -->``, extracted as .ci/run
extracts them) must appear verbatim in a ``run:`` step, with .ci/run's PostgreSQL URLs.
"""

from __future__ import annotations

import re

import yaml

from recipes.runner import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()
CI_RUN = (PROJECT_ROOT / ".ci" / "run").read_text()


def _workflow(name: str) -> dict:
    workflow = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / name).read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the bare key `on` as the boolean true
    return workflow


TESTS = _workflow("tests.yml")
DOCS = _workflow("docs.yml")


def _readme_block(name: str) -> list[str]:
    """.ci/run's readme_block (its awk, line for line): the first ``` block after the marker."""
    lines, found, inside = [], False, False
    for line in README.splitlines():
        if line == f"<!-- ci: {name} -->":
            found = True
            continue
        if found and line.startswith("```"):
            if inside:
                break
            inside = True
            continue
        if found and inside:
            lines.append(line)
    return lines


def _ci_run(name: str) -> str:
    """A top-level ``NAME=value`` of .ci/run, with the ``$VARIABLES`` it uses expanded."""
    values: dict[str, str] = {}
    for key, value in re.findall(r"^(\w+)=(\S+)$", CI_RUN, re.M):
        values[key] = re.sub(r"\$(\w+)", lambda m: values.get(m[1], m[0]), value.strip('"'))
    return values[name]


PYTHONS = re.search(r"^PYTHONS=\((.*)\)$", CI_RUN, re.M).group(1).split()


def _runs(job: dict) -> list[str]:
    """Every line of the job's ``run:`` steps, stripped."""
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def _uses(job: dict, action: str) -> dict:
    """The job's step that uses ``action`` (any version)."""
    return next(step for step in job["steps"] if step.get("uses", "").startswith(f"{action}@"))


def test_the_workflows_run_on_the_events_a_project_needs():
    assert TESTS["on"].keys() == {"push", "pull_request", "workflow_dispatch"}
    assert DOCS["on"] == {"push": {"branches": ["main"]}, "workflow_dispatch": None}
    assert TESTS["concurrency"]["cancel-in-progress"] is True
    assert DOCS["concurrency"]["cancel-in-progress"] is False  # a deployment is never cut off
    for job in [*TESTS["jobs"].values(), *DOCS["jobs"].values()]:
        assert job["timeout-minutes"] > 0
        assert all(re.fullmatch(r"actions/[\w-]+@v\d+", step["uses"])
                   for step in job["steps"] if "uses" in step)


def test_every_job_runs_on_each_python_of_ci_run_with_a_real_postgresql_and_mariadb():
    assert PYTHONS == ["3.11", "3.12", "3.13"]
    for name, job in TESTS["jobs"].items():
        if name != "compat":  # one Python: the floor (test_the_oldest_versions_run_as_ci_run_runs_them)
            assert job["strategy"]["matrix"]["python"] == PYTHONS
            assert job["strategy"]["fail-fast"] is False
        mariadb = job["services"]["mariadb"]
        assert mariadb["env"]["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD"] == "1"
        assert mariadb["env"]["MARIADB_DATABASE"] == _ci_run("MYSQL").rsplit("/", 1)[1]
        assert mariadb["ports"] == ["3306:3306"]
        assert "--health-cmd" in mariadb["options"]
        postgres = job["services"]["postgres"]
        assert postgres["image"] == "postgres:16"
        assert postgres["env"] == {"POSTGRES_HOST_AUTH_METHOD": "trust"}
        assert postgres["ports"] == ["5432:5432"]
        assert "--health-cmd" in postgres["options"]
    build = DOCS["jobs"]["build"]
    # .ci/run builds the site on its first Python
    assert _uses(build, "actions/setup-python")["with"]["python-version"] == PYTHONS[0]


def test_the_test_suite_runs_the_readme_command_on_ci_runs_databases():
    job = TESTS["jobs"]["tests"]
    command = _readme_block("tests")
    assert command and all(line in _runs(job) for line in command)
    include = job["strategy"]["matrix"]["include"]
    databases = {entry["python"]: entry["databases"] for entry in include}
    assert databases == {
        python: _ci_run("ALL_DRIVERS") if python == PYTHONS[0] else _ci_run("ONE_DRIVER")
        for python in PYTHONS
    }
    assert job["env"]["RECIPES_DB_URL"] == "${{ matrix.databases }}"
    assert TESTS["env"]["RECIPES_REQUIRE_POSTGRES"] == "1"
    assert TESTS["env"]["RECIPES_REQUIRE_MYSQL"] == "1"
    # MariaDB is required where the databases name it (the first Python's), as in .ci/run
    assert job["env"]["RECIPES_REQUIRE_MYSQL"] == "${{ matrix.require_mysql }}"
    assert {entry["python"]: entry["require_mysql"] for entry in include} == {
        python: "1" if "mysql" in databases[python] else "0" for python in PYTHONS
    }
    assert "unset RECIPES_REQUIRE_MYSQL" in CI_RUN and "mysql" not in _ci_run("ONE_DRIVER")


def test_each_chapter_runs_on_each_server_in_exactly_one_ci_job():
    """.ci/run shares the chapters' runs on PostgreSQL and MariaDB out among its jobs
    (tests/conftest.py skips the rest of them in each job): none may fall between two."""
    from fnmatch import fnmatch

    from test_notebooks import CHAPTERS, ON_MYSQL_TOO

    shares = dict(re.findall(r'^\s+\[([\d.]+)\]="([^"]*)"$', _block(CI_RUN, "declare -A SERVER_CHAPTERS=("), re.M))
    assert sorted(shares) == sorted(PYTHONS)
    assert 'export RECIPES_SERVER_CHAPTERS="${SERVER_CHAPTERS[$version]}"' in CI_RUN
    runs = [f"{chapter.stem}-postgresql" for chapter in CHAPTERS]
    runs += [f"{chapter.stem}-mysql" for chapter in CHAPTERS if chapter.stem in ON_MYSQL_TOO]
    jobs = {run: [python for python, share in shares.items()
                  if any(fnmatch(run, pattern) for pattern in share.split())] for run in runs}
    assert {run: found for run, found in jobs.items() if len(found) != 1} == {}
    # MariaDB's chapter goes where MariaDB is required (a missing server fails, never skips)
    assert all(found == [PYTHONS[0]] for run, found in jobs.items() if run.endswith("-mysql"))


def _block(text: str, opening: str) -> str:
    """From the line ``opening`` to the next line that is ``)``."""
    start = text.index(f"\n{opening}\n")
    return text[start:text.index("\n)\n", start)]


def test_the_oldest_versions_run_as_ci_run_runs_them():
    job = TESTS["jobs"]["compat"]
    assert "bash .ci/compat" in _runs(job) and "bash .ci/compat" in CI_RUN
    floor = re.search(r'requires-python = ">=(\d+\.\d+)"', (PROJECT_ROOT / "pyproject.toml").read_text())[1]
    assert _uses(job, "actions/setup-python")["with"]["python-version"] == floor


def test_the_chapters_run_with_the_readme_command_and_on_postgresql():
    job = TESTS["jobs"]["workbook"]
    command = _readme_block("workbook")
    assert command and all(line in _runs(job) for line in command)
    # The README's command runs on the default database: RECIPES_DB_URL is not set, as in .ci/run.
    assert "RECIPES_DB_URL" not in {**TESTS.get("env", {}), **job.get("env", {})}
    asyncpg = next(url for url in _ci_run("ALL_DRIVERS").split(",") if "asyncpg" in url)
    assert f".venv/bin/python -m recipes run --db-url {asyncpg}" in _runs(job)
    assert asyncpg == f"postgresql+asyncpg://{_ci_run('PG')}"


def test_the_site_is_built_from_the_readme_command_and_deployed_to_pages():
    build, deploy = DOCS["jobs"]["build"], DOCS["jobs"]["deploy"]
    command = _readme_block("workbook")
    assert command and all(line in _runs(build) for line in command)
    assert ".venv/bin/mkdocs build --strict" in _runs(build)
    # mkdocs's default site_dir
    assert _uses(build, "actions/upload-pages-artifact")["with"]["path"] == "site"
    assert DOCS["permissions"] == {"contents": "read"}
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert [step["uses"] for step in deploy["steps"]] == ["actions/deploy-pages@v4"]
