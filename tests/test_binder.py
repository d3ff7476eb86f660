"""Binder, checked without Docker.

repo2docker builds a Binder image like this: it copies the repository, installs the Python that
``binder/runtime.txt`` names, runs ``pip install -r binder/requirements.txt`` from the
repository root, and the image starts a Jupyter server on the copy. This module does the same
on this machine: a temporary copy of the working tree's files (tracked, and new ones not
ignored; the editable install writes its egg-info there, never into this checkout) and a fresh
virtualenv made with runtime.txt's Python (if that Python is not installed, the running one:
the output says so). In that virtualenv, without ``RECIPES_DB_URL``, it checks that

- chapter 00 runs on the default database, and chapter 04 on the embedded PostgreSQL server
  (``--db-url embedded-postgres``), both ``ok``;
- JupyterLab's server starts, serves chapter 00 through its contents API exactly as stored,
  and serves ``/lab``.

Runs side by side (CI runs three checkouts at once) do not collide: each works in temporary
folders of its own, the Jupyter port is a free one, and each embedded server gets a fresh
``tempfile.mkdtemp`` data folder (here under the copy's own TMPDIR) with its Unix socket in it,
and no TCP port.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_00 = "notebooks/00_start_here.ipynb"
POSTGRES_CHAPTER = "notebooks/04_real_database_fixtures.ipynb"

pytestmark = [pytest.mark.notebooks, pytest.mark.surfaces]


@dataclass
class Binder:
    repo: Path  # the copy, where the image's user starts
    bin: Path  # the virtualenv's scripts
    env: dict[str, str]


def _tail(output: str | bytes | None, chars: int = 4000) -> str:
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return (output or "")[-chars:]


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run a command to completion; fail with the tail of its output unless it exits 0."""
    shown = " ".join(map(str, args))
    try:
        done = subprocess.run(
            args, cwd=cwd, env=env, timeout=timeout, text=True, check=False,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{shown}: still running after {timeout} s:\n{_tail(exc.output)}")
    assert done.returncode == 0, f"{shown}: exit {done.returncode}:\n{_tail(done.stdout)}"
    return done.stdout


def runtime_python() -> str:
    """The newest installed CPython that binder/runtime.txt names, found as .ci/run finds one."""
    version = (ROOT / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    found: list[Path] = []
    if pyenv := shutil.which("pyenv"):
        root = subprocess.run(
            [pyenv, "root"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
        found = sorted(
            Path(root).glob(f"versions/{version}.*/bin/python{version}"),
            key=lambda path: [int(n) for n in re.findall(r"\d+", path.parents[1].name)],
        )
    on_path = shutil.which(f"python{version}")
    # A pyenv shim of a version that is not installed is on PATH, but fails to run.
    if not found and on_path:
        runs = subprocess.run([on_path, "-c", ""], timeout=30, check=False).returncode == 0
        found = [Path(on_path)] if runs else []
    if found:
        return str(found[-1])
    print(f"\nbinder: Python {version} (binder/runtime.txt) is not installed; using the "
          f"running interpreter, {sys.executable} (Python {sys.version.split()[0]})")
    return sys.executable


@pytest.fixture(scope="module")
def binder() -> Iterator[Binder]:
    """The copy of the repository with binder/requirements.txt installed as repo2docker does.

    Not under pytest's temporary folder: as root, embedded-postgres runs the server as a user
    of its own and opens the folders up for it, and a pytest starting meanwhile (another
    checkout's) makes pytest-of-root private again, under the running server's feet.
    """
    base = Path(tempfile.mkdtemp(prefix="recipes-binder-"))
    try:
        yield _install(base)
    finally:
        _stop_leftover_servers(base / "tmp")
        shutil.rmtree(base, ignore_errors=True)


def _install(base: Path) -> Binder:
    repo, venv = base / "repo", base / "venv"
    # What a commit of the working tree would hold: tracked files, and new ones not ignored.
    files = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(files, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert listed.returncode == 0, f"git ls-files failed: {_tail(listed.stderr)}"
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree stays out
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)

    unwanted = ("RECIPES_DB_URL", "PYTHONPATH", "PYTHONHOME")
    env = {key: value for key, value in os.environ.items() if key not in unwanted}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(base / "home" / name.lower())  # a fresh user's folders, as in the image
    # The embedded servers' data folders (and, without XDG_RUNTIME_DIR, embedded-postgres's
    # lock file) go here: nothing shared with other checkouts, and leftovers are easy to find.
    env["TMPDIR"] = str(base / "tmp")
    (base / "tmp").mkdir()

    started = time.monotonic()
    interpreter = runtime_python()
    run([interpreter, "-m", "venv", venv], cwd=base, env=env, timeout=300)
    python = venv / "bin" / "python"
    version = run([python, "--version"], cwd=base, env=env, timeout=30).strip()
    print(f"\nbinder: {version}, from {interpreter}")
    install = [python, "-m", "pip", "install", "-r", "binder/requirements.txt"]
    run(install, cwd=repo, env=env, timeout=1800)
    print(f"binder: virtualenv and pip install took {time.monotonic() - started:.0f} s")

    # The editable install points at the copy, wherever Python starts.
    imported = run([python, "-c", "import recipes; print(recipes.__file__)"],
                   cwd=base, env=env, timeout=60).strip()
    assert Path(imported).is_relative_to(repo), f"recipes is imported from {imported}"
    return Binder(repo, venv / "bin", env)


def _stop_leftover_servers(tmp: Path) -> None:
    """Stop embedded servers that outlived their kernel. A kernel stops its server at exit, but
    jupyter_client kills a kernel still exiting after KernelManager.shutdown_wait_time (5 s),
    which a busy machine can make it: the server then runs on."""
    for pid_file in tmp.glob("recipes-pg-*/data/postmaster.pid"):
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline")  # that pid is still this folder's postmaster
        if not cmdline.exists() or str(pid_file.parent).encode() not in cmdline.read_bytes():
            continue
        print(f"\nbinder: stopping an embedded server its kernel left running: pid {pid}")
        try:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            for _ in range(60):
                os.kill(pid, 0)
                time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _verdict(table: str, notebook: str) -> str:
    rows = [line for line in table.splitlines() if line.startswith(Path(notebook).name + " ")]
    return rows[0].rsplit("|", 1)[1].strip() if rows else "no row for it"


@pytest.mark.parametrize(
    ("chapter", "options"),
    [(CHAPTER_00, []), (POSTGRES_CHAPTER, ["--db-url", "embedded-postgres"])],
    ids=["default-database", "embedded-postgres"],
)
def test_chapter_runs(binder: Binder, chapter: str, options: list[str], tmp_path: Path) -> None:
    started = time.monotonic()
    command = [binder.bin / "python", "-m", "recipes", "run", chapter, *options,
               "--output-dir", tmp_path]
    table = run(command, cwd=binder.repo, env=binder.env, timeout=900)
    print(f"\nbinder: {chapter} {' '.join(options)} took {time.monotonic() - started:.0f} s")
    assert _verdict(table, chapter) == "ok", f"{chapter} is not ok:\n{_tail(table)}"


def _get(url: str, token: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_jupyterlab_serves_a_chapter(binder: Binder, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port; port_retries=0 fails rather than move on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token, url = secrets.token_hex(16), f"http://127.0.0.1:{port}"
    log = tmp_path / "jupyter.log"
    command = [
        binder.bin / "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={binder.repo}",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # Binder's user is not root
    ]
    with log.open("w") as out:
        server = subprocess.Popen(
            command, cwd=binder.repo, env=binder.env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"jupyter lab exited:\n{_tail(log.read_text())}"
            try:
                if _get(f"{url}/api/status", token)[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            assert time.monotonic() < deadline, f"no answer in 120 s:\n{_tail(log.read_text())}"
            time.sleep(0.5)

        status, body = _get(f"{url}/api/contents/{CHAPTER_00}?content=1", token)
        assert status == 200, f"contents API: {status} {_tail(body)}"
        served = json.loads(body)["content"]
        stored = json.loads((binder.repo / CHAPTER_00).read_text())
        for cell in served["cells"]:  # the server marks each code cell trusted or not
            cell["metadata"].pop("trusted", None)
        for cell in stored["cells"]:  # the file splits a source into lines; the API joins them
            cell["source"] = "".join(cell["source"])
        assert served == stored, "the contents API served chapter 00 unlike the stored file"

        status, body = _get(f"{url}/lab", token)
        assert status == 200 and b"jupyter-config-data" in body, f"/lab: {status}\n{_tail(body)}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
