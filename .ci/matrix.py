#!/usr/bin/env python3
"""The version matrix: the built wheel in fresh virtualenvs with other Airflow / SDK / Python versions.

``python3 .ci/matrix.py ENV [ENV ...] --wheel dist/<wheel>`` (``--list`` shows the envs). Each env is a
uv virtualenv outside the repository with the wheel, its ``testing`` and ``demo`` extras, the ``test``
dependency group and the env's pins; then the repository's unit, emulator and integration tests, the
DAG-file checks and a share of the whole-DAG runs run against the installed wheel (the system tests,
the rest of the DAG runs and the demo run in the locked env and in .ci/package_check).

Old Airflow releases are installed as their users install them, with the dependency versions of their
release date (Airflow publishes constraint files for that; uv's ``--exclude-newer`` gives the same
picture from the registry alone). Packages pinned past that date are exempted by name.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LATER = "2100-01-01T00:00:00Z"  # "no cutoff" for packages exempted from an env's date


@dataclass(frozen=True)
class Env:
    name: str
    what: str
    python: str
    pins: tuple[str, ...]
    as_of: str | None = None
    exempt: tuple[str, ...] = ()
    """Packages resolved without the ``as_of`` cutoff (released after it, or test tools)."""
    dag_runs: tuple[str, ...] = field(default=())
    """The DAG tests that run whole DAGs here (Airflow 3.2's ``dag.test()`` spends seconds of CPU per task,
    so the envs share them out to stay in CI's time budget; the locked env runs them all)."""


ENVS = {
    env.name: env
    for env in (
        Env(
            name="lowest",
            what="Python 3.11, the lowest declared Airflow and Google libraries",
            python="3.11",
            pins=(
                "apache-airflow==3.2.0",
                "google-genai==1.61.0",
                "google-cloud-storage==3.0.0",
                "google-auth==2.47.0",
            ),
            as_of="2026-04-10T00:00:00Z",  # Airflow 3.2.0 was released on 2026-04-07
            exempt=("gcp-storage-emulator",),
            dag_runs=(
                "tests/dags/test_nightly_document_analysis.py::test_every_document_is_analysed_stored_and_cleaned_up[register]",
            ),
        ),
        Env(
            name="google-provider",
            what="Python 3.13, Airflow 3.2.x, the latest Google provider, the highest google-genai 2.x",
            python="3.13",
            pins=(
                "apache-airflow==3.2.2",
                "apache-airflow-providers-google==22.8.0",
                "google-genai==2.34.0",
            ),
            as_of="2026-06-05T00:00:00Z",  # Airflow 3.2.2 was released on 2026-05-29
            exempt=(
                "gcp-storage-emulator",
                "apache-airflow-providers-google",
                "apache-airflow-providers-common-compat",
                "google-cloud-aiplatform",
                "google-genai",
                "google-auth",
            ),
            dag_runs=(
                "tests/dags/test_transcribe_audio.py::test_audio_is_transcribed_summarised_and_deleted_after_a_deferred_wait",
                "tests/dags/test_readme_dag.py::test_the_readme_minimal_dag_fails_its_run_when_a_document_fails_and_still_cleans_up",
            ),
        ),
    )
}

TESTS = (
    "tests/unit",
    "tests/emulator",
    "tests/integration",
    "tests/dags/test_dag_files.py",
    "tests/dags/test_demo.py",  # its checks; the demo itself runs in .ci/package_check
    "tests/dags/test_readme_dag.py::test_every_python_block_of_the_readme_is_one_these_tests_run",
    "tests/dags/test_readme_dag.py::test_the_readme_emulator_controls_do_what_their_comments_say",
    "--deselect",
    "tests/dags/test_demo.py::test_demo_runs_the_nightly_dag_offline_and_prints_results_and_cleanup",
    "--deselect",
    "tests/dags/test_demo.py::test_demo_with_batch_analysis_runs_one_batch_job_offline",
)


def say(env: Env, message: str) -> None:
    print(f"[matrix {env.name}] {message}", flush=True)


def find_python(version: str) -> str:
    """An interpreter for ``version``: on PATH, else a pyenv build (uv never downloads one here)."""
    for candidate in [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(f"/root/.pyenv/versions/{version}*/bin/python{version}")),
    ]:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    raise SystemExit(f"matrix: no working python{version} on this machine (PATH or ~/.pyenv/versions)")


def test_group() -> list[str]:
    """The ``test`` dependency group, without the self-reference (the wheel stands in for it)."""
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]
    return [
        req for req in groups["test"] if isinstance(req, str) and not req.startswith("airflow-gemini-files")
    ]


def run(env: Env, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, text=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        say(env, f"FAILED (exit {done.returncode}): {' '.join(command)}")
        raise SystemExit(done.returncode)
    return done


def build_env(env: Env, wheel: Path, venv: Path) -> Path:
    uv = os.environ.get("CI_UV", "uv").split()
    python = find_python(env.python)
    run(env, [*uv, "venv", "-q", "--python", python, str(venv)])
    interpreter = venv / "bin" / "python"
    command = [*uv, "pip", "install", "-q", "--python", str(interpreter)]
    if env.as_of:
        command += ["--exclude-newer", env.as_of]
        for package in env.exempt:
            command += ["--exclude-newer-package", f"{package}={LATER}"]
    command += [f"{wheel}[testing,demo]", *env.pins, *test_group()]
    run(env, command)
    return interpreter


def versions(interpreter: Path) -> str:
    script = (
        "import importlib.metadata as m, json, platform\n"
        "names = ['apache-airflow', 'apache-airflow-task-sdk', 'google-genai', 'google-cloud-storage',"
        " 'google-auth', 'apache-airflow-providers-google', 'pydantic']\n"
        "found = {}\n"
        "for n in names:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps({'python': platform.python_version(), **found}))"
    )
    done = subprocess.run([str(interpreter), "-c", script], capture_output=True, text=True, check=True)
    return ", ".join(f"{k} {v}" for k, v in json.loads(done.stdout).items())


def run_env(env: Env, wheel: Path) -> float:
    start = time.monotonic()
    say(env, f"{env.what}: building")
    with tempfile.TemporaryDirectory(prefix=f"gemini-files-matrix-{env.name}-") as tmp:
        interpreter = build_env(env, wheel, Path(tmp) / "venv")
        say(env, f"installed in {time.monotonic() - start:.0f}s: {versions(interpreter)}")
        # The tests import the installed wheel, not the checkout (pytest does not put the repository
        # on sys.path: tests/ has no __init__.py).
        where = subprocess.run(
            [str(interpreter), "-c", "import airflow_gemini_files as p; print(p.__file__)"],
            capture_output=True, text=True, cwd=tmp, check=True,
        ).stdout.strip()  # fmt: skip
        say(env, f"testing {where}")
        env_vars = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        command = [str(interpreter), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5"]
        command += [*TESTS, *env.dag_runs]
        done = subprocess.run(command, cwd=REPO, env=env_vars, text=True)
        if done.returncode == 5:
            say(env, "pytest collected no tests: FAILED")
            raise SystemExit(1)
        if done.returncode != 0:
            say(env, f"tests FAILED (exit {done.returncode}) on: {versions(interpreter)}")
            raise SystemExit(done.returncode)
    elapsed = time.monotonic() - start
    say(env, f"OK in {elapsed:.0f}s")
    return elapsed


def run_concurrently(names: list[str], wheel: Path, jobs: int) -> int:
    """Each env in its own process, ``jobs`` at a time; an env's output is printed whole when it ends.

    One env's tests keep about one core busy (the pytest process and the emulators' threads share one
    interpreter), so two envs side by side on CI's two cores take about the time of the slower one.
    """
    waiting = list(names)
    running: dict[str, subprocess.Popen[bytes]] = {}
    failed: list[str] = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gemini-files-matrix-logs-") as logs:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                command = [sys.executable, __file__, name, "--wheel", str(wheel)]
                with open(Path(logs) / name, "wb") as log:
                    running[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                print(f"[matrix] {name}: started", flush=True)
            time.sleep(2)
            for name, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                sys.stdout.flush()
                sys.stdout.buffer.write((Path(logs) / name).read_bytes())
                verdict = "OK" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
                print(f"[matrix] {name}: {verdict} after {time.monotonic() - start:.0f}s", flush=True)
                if process.returncode != 0:
                    failed.append(name)
    if failed:
        print(f"[matrix] failed envs: {', '.join(failed)}", flush=True)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("envs", nargs="*", help=f"envs to run (default: all of {', '.join(ENVS)})")
    parser.add_argument("--wheel", type=Path, help="the built wheel (default: the newest in dist/)")
    parser.add_argument("--list", action="store_true", help="list the envs and exit")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="envs run side by side (default 2)"
    )
    args = parser.parse_args()
    if args.list:
        for env in ENVS.values():
            print(
                f"{env.name}: {env.what}; {' '.join(env.pins)}"
                + (f"; as of {env.as_of}" if env.as_of else "")
            )
        return 0
    wheel = args.wheel or max((REPO / "dist").glob("*.whl"), key=lambda p: p.stat().st_mtime)
    unknown = [name for name in args.envs if name not in ENVS]
    if unknown:
        parser.error(f"unknown env(s) {unknown}; choose from {list(ENVS)}")
    names = args.envs or list(ENVS)
    if len(names) == 1 or args.jobs == 1:
        for name in names:
            run_env(ENVS[name], wheel.resolve())
        return 0
    return run_concurrently(names, wheel.resolve(), args.jobs)


if __name__ == "__main__":
    sys.exit(main())
